"""The clustered local stack's pure parts (no process started): broker configs make one KRaft
quorum with replication 3 / min ISR 2 on ports apart from the single-node stack, and the Serve
config derived from deploy/serve/grdline.yaml is valid and pins one replica of each deployment
per worker node."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ingest.settings import KAFKA_CONTROLLER_PORT, KAFKA_PORT

from ._render import DEPLOY


def _cluster():
    name = "grdline_local_cluster"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DEPLOY / "local" / "cluster.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_brokers_form_one_quorum_with_replication_three(tmp_path):
    c = _cluster()
    cl = c.Cluster(tmp_path)
    configs = [_props(cl.kafka_config(n)) for n in c.BROKERS]
    assert {p["controller.quorum.voters"] for p in configs} == {
        "1@127.0.0.1:29192,2@127.0.0.1:29193,3@127.0.0.1:29194"}
    assert [p["node.id"] for p in configs] == ["1", "2", "3"]
    for p in configs:
        assert p["process.roles"] == "broker,controller"
        assert p["default.replication.factor"] == "3" and p["min.insync.replicas"] == "2"
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["auto.create.topics.enable"] == "false"
    ports = {*c.KAFKA_PORTS.values(), *c.KAFKA_CONTROLLER_PORTS.values(), c.REDIS_PORT, c.RAY_GCS_PORT,
             c.RAY_DASHBOARD_PORT, *c.RAY_METRICS_PORTS.values()}
    assert not ports & {KAFKA_PORT, KAFKA_CONTROLLER_PORT, 16379, 19090, 18080, 18081}  # the single-node stack's


def test_derived_serve_config_is_valid_and_spreads_replicas(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    from inference.app import AppArgs, config_from_args

    c = _cluster()
    config = c.serve_config(tmp_path / "model", overrides={"deadline": {"default_deadline_ms": None}})
    (app,) = ServeDeploySchema.model_validate(config).applications
    cfg = config_from_args(AppArgs.model_validate(app.args))
    assert cfg.model_dir == tmp_path / "model" and cfg.deadline.default_deadline_ms is None
    deps = {d.name: d for d in app.deployments}
    assert deps["GRDNetModel"].ray_actor_options.resources == {c.MODEL_RESOURCE: 1}
    assert deps["LineIngress"].ray_actor_options.resources == {c.INGRESS_RESOURCE: 1}
    assert all(d.max_replicas_per_node == 1 for d in deps.values())
    # everything else comes from the one Serve config
    source = c.yaml.safe_load(c.SERVE_CONFIG.read_text())["applications"][0]
    assert app.import_path == source["import_path"]
    assert deps["GRDNetModel"].user_config == next(
        d for d in source["deployments"] if d["name"] == "GRDNetModel")["user_config"]
    # each worker advertises exactly one of each resource; the head none
    argv = {n: " ".join(c.Cluster(tmp_path)._ray_argv(n)) for n in c.RAY_NODES}
    assert c.MODEL_RESOURCE not in argv["head"] and c.INGRESS_RESOURCE not in argv["head"]
    for w in ("w1", "w2"):
        assert f'"{c.MODEL_RESOURCE}": 1' in argv[w] and f'"{c.INGRESS_RESOURCE}": 1' in argv[w]


def test_ray_state_stays_out_of_the_default_temp_dir(tmp_path):
    c = _cluster()
    head = c.Cluster(tmp_path)._ray_argv("head")
    temp = next(a for a in head if a.startswith("--temp-dir="))
    assert not temp.startswith("--temp-dir=/tmp/ray") and len(temp) < 40  # socket paths stay short
    env = c.Cluster(tmp_path).ray_env()
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"].startswith(str(tmp_path))
    c.Cluster(tmp_path)._ensure_token()
    token = Path(env["RAY_AUTH_TOKEN_PATH"])
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
    assert Path(c.REPO, "deploy", "serve", "grdline.yaml") == c.SERVE_CONFIG
