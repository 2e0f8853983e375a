"""(b) The compose file is accepted by a real Compose implementation and by the Compose schema.

Nothing is started: the project's machines have the Docker client but no engine. Checked:

* ``docker-compose config`` (Debian's ``docker-compose`` 1.29, installed by deploy/local/bootstrap.sh)
  parses, interpolates and validates the file without an engine;
* the file validates against the Compose specification's JSON schema as shipped in that same
  Debian package (``compose/config/compose_spec.json``; a 2021 revision of the spec: newer
  top-level keys such as ``name`` or ``include`` are not used for that reason);
* the wiring a schema cannot see: three KRaft voters, RF 3 / min ISR 2, Redis AOF, the GPU
  reservation, the Serve config and the generated Prometheus files mounted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ._render import DEPLOY

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
SPEC = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
ENV = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "not-a-secret-test-value",
       "RAY_AUTH_TOKEN": "not-a-secret-test-token", "GRDLINE_REDIS_PASSWORD": "not-a-secret-redis-password"}


def _docker_compose() -> str:
    path = shutil.which("docker-compose")
    assert path, "docker-compose not installed: run deploy/local/bootstrap.sh (Debian package docker-compose)"
    return path


def _config(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([_docker_compose(), "-f", str(COMPOSE_FILE), "config", *args],
                          capture_output=True, text=True, cwd=COMPOSE_DIR, env=env or ENV, timeout=60)


def test_docker_compose_config_accepts_the_file():
    proc = _config()
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert set(resolved["services"]) >= {"kafka-1", "kafka-2", "kafka-3", "redis", "prometheus",
                                         "grafana", "ray-head", "ray-gpu-worker", "ray-cpu-worker",
                                         "camera", "topics"}


@pytest.mark.parametrize("secret", ["GRAFANA_ADMIN_PASSWORD", "RAY_AUTH_TOKEN", "GRDLINE_REDIS_PASSWORD"])
def test_secrets_are_required_from_the_environment(secret):
    env = {k: v for k, v in ENV.items() if k != secret}
    proc = _config("-q", env=env)
    assert proc.returncode != 0 and secret in proc.stderr
    assert "not-a-secret" not in COMPOSE_FILE.read_text()


@pytest.mark.parametrize("which", ["as written", "as resolved by docker-compose config"])
def test_validates_against_the_compose_spec_schema(which):
    import jsonschema

    assert SPEC.exists(), f"{SPEC} missing: the Debian docker-compose package ships it"
    schema = json.loads(SPEC.read_text())
    if which == "as written":
        doc = yaml.safe_load(COMPOSE_FILE.read_text())
    else:
        proc = _config()
        assert proc.returncode == 0, proc.stderr
        doc = yaml.safe_load(proc.stdout)
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_wiring():
    doc = yaml.safe_load(_config().stdout)
    s = doc["services"]
    voters = {s[f"kafka-{i}"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for i in (1, 2, 3)}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    for i in (1, 2, 3):
        env = s[f"kafka-{i}"]["environment"]
        assert env["KAFKA_NODE_ID"] == str(i) and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert s[f"kafka-{i}"]["image"].startswith("apache/kafka:4.")
    assert "--appendonly" in s["redis"]["command"]
    (device,) = s["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert "serve deploy deploy/serve/grdline.yaml" in " ".join(s["ray-head"]["command"])
    mounts = " ".join(str(v) for v in s["prometheus"]["volumes"])
    assert "prometheus.yml" in mounts and "grdline-rules.yml" in mounts
    assert any("dashboards/provisioning" in str(v) for v in s["grafana"]["volumes"])
    for name in ("ray-head", "camera", "ray-cpu-worker", "ray-gpu-worker"):
        assert s[name]["environment"]["GRDLINE_KAFKA_BOOTSTRAP_SERVERS"].count("kafka-") == 3
        # token auth on the Ray nodes; the camera is no Ray client and gets no token
        assert ("RAY_AUTH_MODE" in s[name]["environment"]) is (name != "camera")


def test_secrets_only_where_needed():
    """The Ray token only in Ray nodes; the Redis password in the Redis server (which reads it as
    requirepass) and the Ray nodes (whose ingress replicas write results); the camera neither."""
    services = yaml.safe_load(_config().stdout)["services"]
    for name, svc in services.items():
        env = svc.get("environment") or {}
        is_ray = name.startswith("ray-")
        assert ("RAY_AUTH_TOKEN" in env) is is_ray, name
        assert ("GRDLINE_REDIS_PASSWORD" in env) is (is_ray or name == "redis"), name
    assert services["ray-head"]["environment"]["RAY_AUTH_MODE"] == "token"
    redis = services["redis"]
    script = redis["command"][2]
    assert "requirepass" in script and "$GRDLINE_REDIS_PASSWORD" in script and "exec redis-server" in script
    assert "not-a-secret" not in " ".join(redis["command"])  # never on the command line
    assert redis["environment"]["REDISCLI_AUTH"] == redis["environment"]["GRDLINE_REDIS_PASSWORD"]  # healthcheck
