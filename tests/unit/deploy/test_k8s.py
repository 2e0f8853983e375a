"""(c) The Kubernetes manifests: every overlay builds with kustomize, every core object validates
against the Kubernetes OpenAPI schema bundled in ``kubernetes-validate`` (strict: unknown fields
fail), and the custom resources are checked as far as the project can.

Custom resources (RayService, Kafka, KafkaNodePool, KafkaTopic, PodMonitor, ServiceMonitor,
PrometheusRule): kubernetes-validate bundles no CRD schema and no registry package here ships the
KubeRay, Strimzi or Prometheus Operator CRDs, so their ``spec`` is NOT validated against the
operators' schemas. What is checked instead: their ``metadata`` as a core ObjectMeta (strict),
every pod template embedded in the RayService as a core ``PodTemplate`` (strict), the
serveConfigV2 with Ray's ServeDeploySchema (test_serve_config.py), the PrometheusRule groups with
promtool (test_prometheus_files.py), and the cross-references below (labels that monitors select,
topics' replication, the Strimzi cluster label, worker groups and autoscaling).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ._render import DEPLOY, load_render

OVERLAYS = ("cpu", "gpu")
CRDS = {
    ("ray.io/v1", "RayService"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("kafka.strimzi.io/v1beta2", "KafkaUser"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, list[dict]]:
    """``kubectl kustomize`` of each overlay, on a copy of deploy/k8s with the dashboards' JSON
    written into it (those copies are generated, not committed)."""
    kubectl = shutil.which("kubectl")
    # kubectl comes with every machine image of the project's kind (google-cloud-cli's kubectl);
    # without it the overlays cannot be built, which is a failure, not a reason to skip
    assert kubectl is not None, "kubectl (with its built-in kustomize) is not on PATH"
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(DEPLOY / "k8s", root)
    load_render().write_k8s_dashboards(root / "base" / "grafana" / "dashboards")
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run([kubectl, "kustomize", str(root / "overlays" / overlay)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def _validate(doc: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate(built, overlay):
    import kubernetes_validate

    kinds = set()
    for doc in built[overlay]:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRDS:
            continue
        try:
            _validate(doc)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}") from exc
        kinds.add(doc["kind"])
    assert kinds >= {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet", "Deployment"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_metadata_and_pod_templates(built, overlay):
    seen = set()
    for doc in built[overlay]:
        key = (doc["apiVersion"], doc["kind"])
        if key not in CRDS:
            continue
        seen.add(key)
        _validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})
        if doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            templates = [cluster["headGroupSpec"]["template"]]
            templates += [g["template"] for g in cluster["workerGroupSpecs"]]
            for t in templates:
                _validate({"apiVersion": "v1", "kind": "PodTemplate",
                           "metadata": {"name": "check"}, "template": t})
    assert seen == CRDS, f"missing custom resources: {CRDS - seen}"


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cross_references(built, overlay):
    docs = built[overlay]
    rs = _one(docs, "RayService")
    # what kubectl applies still carries the one Serve config, unchanged by kustomize
    assert rs["spec"]["serveConfigV2"] == load_render().SERVE_CONFIG.read_text()
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] >= 1 and group["maxReplicas"] > group["minReplicas"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    worker = group["template"]["spec"]["containers"][0]
    if overlay == "gpu":
        assert group["groupName"] == "gpu" and group["rayStartParams"]["num-gpus"] == "1"
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert worker["image"].endswith("-cuda")
    else:
        assert "nvidia.com/gpu" not in worker["resources"]["limits"]
        assert worker["image"].endswith("-cpu")
    # the PodMonitor selects the Ray pods and scrapes their named metrics port
    pm = _one(docs, "PodMonitor")
    pods = [cluster["headGroupSpec"]["template"], group["template"]]
    for t in pods:
        labels = t["metadata"]["labels"]
        assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ports = [p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])]
        assert pm["spec"]["podMetricsEndpoints"][0]["port"] in ports
    sm = _one(docs, "ServiceMonitor")
    svc = _one(docs, "Service", "camera-sim")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # Kafka: 3 KRaft nodes, every topic on this cluster with RF 3 / min ISR 2
    pool = _one(docs, "KafkaNodePool")
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    kafka = _one(docs, "Kafka")
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    for t in (d for d in docs if d["kind"] == "KafkaTopic"):
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert t["spec"]["replicas"] == 3
    # everything lives in one namespace; endpoints point at the Strimzi bootstrap service
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"grdline"}
    endpoints = _one(docs, "ConfigMap", "grdline-endpoints")["data"]
    assert endpoints["GRDLINE_KAFKA_BOOTSTRAP_SERVERS"].startswith(f"{kafka['metadata']['name']}-kafka-bootstrap:")
    dashboards = _one(docs, "ConfigMap", "grdline-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(dashboards["data"]) == set(load_render().k8s_dashboards()), "a dashboard is missing"
    from dashboards.grafana import DEFAULT_DATASOURCE_UID

    ds = yaml.safe_load(_one(docs, "ConfigMap", "grdline-grafana-datasource")["data"]["grdline-datasource.yaml"])
    assert ds["datasources"][0]["uid"] == DEFAULT_DATASOURCE_UID


def test_only_files_in_kustomizations_exist():
    """No stray manifest: every YAML under base/ is listed in its kustomization."""
    base = DEPLOY / "k8s" / "base"
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    files = {str(p.relative_to(base)) for p in base.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files == listed, f"unlisted: {files - listed}; missing: {listed - files}"


def test_manifest_templates_are_not_in_the_build():
    assert not (DEPLOY / "k8s" / "base" / "templates").exists()
    assert Path(DEPLOY / "k8s" / "templates" / "rayservice.yaml").exists()


# ----------------------------------------------------------------------------- only the line decides


def _pods(docs: list[dict]) -> dict[str, dict]:
    """Every pod template by a readable name: Deployments/StatefulSets and the Ray groups."""
    out = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            out[d["metadata"]["name"]] = d["spec"]["template"]
        if d["kind"] == "RayService":
            cluster = d["spec"]["rayClusterConfig"]
            out["ray-head"] = cluster["headGroupSpec"]["template"]
            for g in cluster["workerGroupSpecs"]:
                out[f"ray-{g['groupName']}"] = g["template"]
    return out


def _env(template: dict) -> dict[str, dict]:
    return {e["name"]: e for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]
            for e in c.get("env", [])}


def _selects(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespace_has_a_default_deny_policy(built, overlay):
    docs = built[overlay]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for ns in {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}:
        deny = [p for p in policies if p["metadata"].get("namespace") == ns and p["spec"]["podSelector"] == {}
                and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                and not p["spec"].get("ingress") and not p["spec"].get("egress")]
        assert deny, f"namespace {ns} has no default-deny NetworkPolicy"
    # every pod is selected by some allow policy (else default-deny leaves it cut off), and the
    # allows are the ones the line needs: who may reach Redis, Kafka's client port and Ray
    pods = _pods(docs)
    for name, t in pods.items():
        labels = t["metadata"]["labels"]
        assert any(_selects(p["spec"]["podSelector"], labels) and p["spec"]["podSelector"]
                   for p in policies), f"{name}: no NetworkPolicy allows it anything"

    def allowed_from(target: str, port: int) -> set[str]:
        labels = pods[target]["metadata"]["labels"]
        who = set()
        for p in policies:
            if not p["spec"]["podSelector"] or not _selects(p["spec"]["podSelector"], labels):
                continue
            for rule in p["spec"].get("ingress", []):
                if rule.get("ports") and port not in [x["port"] for x in rule["ports"]]:
                    continue
                for peer in rule["from"]:
                    if "namespaceSelector" in peer:
                        continue  # other namespaces: operators and Prometheus, checked by name below
                    who |= {n for n, t in pods.items() if _selects(peer["podSelector"], t["metadata"]["labels"])}
        return who

    assert allowed_from("redis", 6379) == {n for n in pods if n.startswith("ray-")}
    assert allowed_from("camera-sim", 18081) == set()  # Prometheus only (another namespace)
    assert "camera-sim" not in allowed_from("ray-head", 8265)  # the dashboard / job API


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_server_and_clients_read_the_one_secret(built, overlay):
    docs = built[overlay]
    conf = _one(docs, "ConfigMap", "redis-config")["data"]["redis.conf"]
    assert "protected-mode yes" in conf and "protected-mode no" not in conf and "requirepass" not in conf
    pods = _pods(docs)
    redis = pods["redis"]["spec"]
    (init,) = redis["initContainers"]
    secret = init["env"][0]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "grdline-redis", "key": "password"}  # required: no pod without it
    assert "requirepass" in " ".join(init["command"]) and "$REDIS_PASSWORD" in " ".join(init["command"])
    written = " ".join(init["command"]).split("> ")[-1]
    (server,) = redis["containers"]
    assert server["args"] == [written]  # the server runs the config the password was written into
    for name in ("ray-head", *(n for n in pods if n.startswith("ray-") and n != "ray-head")):
        ref = _env(pods[name])["GRDLINE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "grdline-redis", "key": "password"}, name  # not optional any more
    assert "GRDLINE_REDIS_PASSWORD" not in _env(pods["camera-sim"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_listener_is_sasl_with_acls_from_ingest_acl(built, overlay):
    from ingest.acl import ADMIN, CAMERA, INGRESS, principals

    docs = built[overlay]
    kafka = _one(docs, "Kafka")["spec"]["kafka"]
    assert kafka["listeners"], "no listener"
    for listener in kafka["listeners"]:
        assert listener["authentication"]["type"] == "scram-sha-512", listener["name"]
    assert kafka["authorization"] == {"type": "simple", "superUsers": [ADMIN]}
    assert kafka["config"]["allow.everyone.if.no.acl.found"] is False
    endpoints = _one(docs, "ConfigMap", "grdline-endpoints")["data"]
    assert endpoints["GRDLINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert endpoints["GRDLINE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    users = {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaUser"}
    assert set(users) == {p.name for p in principals()}
    camera_acls = users[CAMERA]["spec"]["authorization"]["acls"]
    assert [(a["resource"]["name"], a["operations"]) for a in camera_acls] == [("frames", ["Write", "Describe", "DescribeConfigs"])]
    # each pod authenticates as its own principal with the User Operator's Secret of that name
    pods = _pods(docs)
    for name, principal in [("camera-sim", CAMERA), ("ray-head", INGRESS)] + [
            (n, INGRESS) for n in pods if n.startswith("ray-") and n != "ray-head"]:
        env = _env(pods[name])
        assert env["GRDLINE_KAFKA_SASL_USERNAME"]["value"] == principal, name
        assert env["GRDLINE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": principal, "key": "password"}
        assert pods[name]["metadata"]["labels"]["grdline.io/kafka-client"] == "true"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_token_only_in_ray_pods(built, overlay):
    docs = built[overlay]
    cluster = _one(docs, "RayService")["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}  # KubeRay puts the token in Ray pods only
    for name, t in _pods(docs).items():
        text = str(t)
        if not name.startswith("ray-"):
            assert "RAY_AUTH" not in text and "ray-auth" not in text.lower(), name
    for d in docs:  # no token or Ray secret handed out any other way (ConfigMaps, env of other kinds)
        if d["kind"] in ("ConfigMap",) and d["metadata"]["name"] != "grdline-dashboards":
            assert "RAY_AUTH" not in str(d), d["metadata"]["name"]
