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


def test_only_authenticated_principals_reach_the_brokers(tmp_path, monkeypatch):
    """Every listener is SASL (SCRAM-SHA-512 for clients and between brokers, PLAIN between
    controllers), the StandardAuthorizer denies what ingest.acl does not grant, and every
    password derives from the one secret: another secret, other passwords."""
    from ingest import acl

    c = _cluster()
    monkeypatch.delenv(c.SECRET_ENV, raising=False)
    cl = c.Cluster(tmp_path)
    p = _props(cl.kafka_config(1))
    assert p["listeners"].startswith("SASL_PLAINTEXT://") and "PLAINTEXT://" not in p["listeners"].replace("SASL_PLAINTEXT://", "")
    assert set(p["listener.security.protocol.map"].split(",")) == {"SASL_PLAINTEXT:SASL_PLAINTEXT", "CONTROLLER:SASL_PLAINTEXT"}
    assert p["sasl.enabled.mechanisms"] == "SCRAM-SHA-512" and p["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert p["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert p["allow.everyone.if.no.acl.found"] == "false"
    assert set(p["super.users"].split(";")) == {f"User:{acl.ADMIN}", f"User:{c.CONTROLLER_USER}"}
    # one secret, a 0600 file made once; passwords differ per user and follow the secret
    secret_file = tmp_path / "secret"
    assert secret_file.exists() and secret_file.stat().st_mode & 0o077 == 0
    users = [q.name for q in acl.principals()] + [c.CONTROLLER_USER, "redis"]
    assert len({cl.password(u) for u in users}) == len(users)
    assert cl.password(acl.ADMIN) in p["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    before = cl.password(acl.ADMIN)
    monkeypatch.setenv(c.SECRET_ENV, "another-secret")
    assert before not in cl.kafka_config(1) and cl.password(acl.ADMIN) in cl.kafka_config(1)
    # the replicas are the ingress principal; the publisher the camera's; Redis has the password
    env = cl.ray_env()
    assert env["GRDLINE_KAFKA_SASL_USERNAME"] == acl.INGRESS and env["GRDLINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["GRDLINE_KAFKA_SASL_PASSWORD"] == cl.password(acl.INGRESS)
    assert env["GRDLINE_REDIS_PASSWORD"] == cl.password("redis")
    kw = cl.kafka_settings(acl.CAMERA).client_kwargs()
    assert kw["sasl_plain_username"] == acl.CAMERA and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "sasl_mechanism" not in cl.kafka_settings(None).client_kwargs()
    assert cl.password(acl.CAMERA) not in repr(cl.kafka_settings(acl.CAMERA))  # SecretStr: never in a repr


def test_the_acls_of_ingest_acl_are_what_the_brokers_get():
    """The grants the cluster applies (kafka-python ACL objects) are those of ingest.acl: the
    camera writes the frames topic only; the ingress reads frames (live and replay) and rejects,
    writes rejects and dead letters; the station reads rejects; nobody else writes a verdict."""
    from kafka.admin import ACLOperation, ResourceType

    from ingest import acl
    from ingest.topics import DLQ, FRAMES, FRAMES_REPLAY, REJECTS

    def grants(name: str) -> set[tuple[str, str, str]]:
        return {(a.resource_pattern.resource_type.name, a.resource_pattern.resource_name, a.operation.name)
                for a in acl.kafka_acls(acl.by_name(name))}

    writes = {n: {r for t, r, op in grants(n) if t == "TOPIC" and op == "WRITE"} for n in
              (acl.CAMERA, acl.INGRESS, acl.STATION, acl.REPLAYER)}
    assert writes == {acl.CAMERA: {FRAMES}, acl.INGRESS: {REJECTS, DLQ}, acl.STATION: set(),
                      acl.REPLAYER: {FRAMES_REPLAY}}
    reads = {n: {r for t, r, op in grants(n) if op == "READ"} for n in (acl.CAMERA, acl.INGRESS, acl.STATION)}
    assert reads == {acl.CAMERA: set(), acl.INGRESS: {FRAMES, FRAMES_REPLAY, REJECTS, acl.INGRESS_GROUP, acl.REPLAY_GROUP},
                     acl.STATION: {REJECTS, acl.STATION_GROUP}}
    assert ("TRANSACTIONAL_ID", acl.INGRESS_TRANSACTIONAL_PREFIX, "WRITE") in grants(acl.INGRESS)
    assert all(a.operation is not ACLOperation.ALL and a.resource_pattern.resource_type is not ResourceType.CLUSTER
               for p in acl.principals() for a in acl.kafka_acls(p))

    class FakeAdmin:
        def __init__(self, failed=()):
            self.sent, self.failed = [], list(failed)

        def create_acls(self, acls):
            self.sent += acls
            return {"succeeded": acls, "failed": self.failed}

    ok = FakeAdmin()
    assert acl.apply_acls(ok) == len(ok.sent) > 0
    import pytest

    with pytest.raises(RuntimeError, match="refused 1 ACL"):
        acl.apply_acls(FakeAdmin(failed=["x"]))
