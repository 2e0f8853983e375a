"""Every shipped Redis carries the maxmemory that inference.redis_memory derives (rate × TTL × bytes
per result, + streams, claims, headroom), the Kubernetes limit derived from it, and
deploy/README.md the same worked numbers: nothing sized by hand can drift from the formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dashboards.alerts import alert_rules
from inference import redis_memory as rm
from inference.config import RedisSinkSettings
from inference.stack_cli import load_stack

from ._render import DEPLOY


def _k8s_redis() -> tuple[dict[str, str], dict]:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "base" / "redis" / "redis.yaml").read_text()))
    conf = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["redis.conf"]
    lines = dict(line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    (container,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"]
    return lines, container["resources"]


def _conf(lines: list[str]) -> dict[str, str]:
    return dict(line.split(None, 1) for line in lines)


def test_the_formula_adds_up():
    s = rm.RedisSizing(frames_per_s=10, result_ttl_s=100, result_bytes=1000, reject_share=0.5,
                       reject_claim_ttl_s=10, stream_maxlen=900, lines=1)
    assert s.results_bytes() == 10 * 100 * 1000
    assert s.streams_bytes() == 2 * 1000 * rm.STREAM_ENTRY_BYTES
    assert s.claims_bytes() == 10 * 0.5 * 10 * rm.CLAIM_BYTES
    steady = s.results_bytes() + s.streams_bytes() + s.claims_bytes() + rm.BASE_BYTES
    assert s.maxmemory_mb() * rm.MIB >= steady * rm.HEADROOM > (s.maxmemory_mb() - 1) * rm.MIB
    # the limit leaves the fork its copy-on-write share and the allocator its fragmentation
    assert s.limit_mi() * rm.MIB >= s.maxmemory_mb() * rm.MIB * (rm.FRAGMENTATION + rm.FORK_COW_SHARE)


def test_deploy_sizing_uses_the_sink_defaults_and_the_alert_thresholds():
    d, sink = rm.DEPLOY_SIZING, RedisSinkSettings()
    assert (d.result_ttl_s, d.stream_maxlen, d.reject_claim_ttl_s) == (
        sink.result_ttl_s, sink.stream_maxlen, sink.reject_claim_ttl_s)
    serve = yaml.safe_load((DEPLOY / "serve" / "grdline.yaml").read_text())
    (app,) = serve["applications"]
    shipped = app["args"]["config"].get("sink", {})
    assert shipped.get("result_ttl_s", d.result_ttl_s) == d.result_ttl_s
    assert shipped.get("stream_maxlen", d.stream_maxlen) == d.stream_maxlen
    rules = {r["alert"]: r for r in alert_rules()["groups"][0]["rules"]}
    assert rules["GrdlineDefectRateHigh"]["expr"].endswith(f"> {d.reject_share}")
    assert rules["GrdlineRedisMemoryHigh"]["expr"].endswith(f"> {rm.ALERT_FILL_RATIO}")
    # the sized steady state never fires the memory alert by itself
    assert 1 / rm.HEADROOM < rm.ALERT_FILL_RATIO


def _memory_lines(conf: dict[str, str]) -> list[str]:
    return [f"{k} {conf[k]}" for k in ("maxmemory", "maxmemory-policy", "hash-max-listpack-value")]


def test_local_stack_sets_maxmemory():
    conf = _conf(load_stack()._redis_config(Path("/tmp/x")).splitlines())
    assert _memory_lines(conf) == rm.memory_config()
    assert conf["maxmemory"] == f"{rm.DEPLOY_SIZING.maxmemory_mb()}mb"


def test_cluster_stack_sets_maxmemory(tmp_path, monkeypatch):
    """The clustered stack's redis.conf as start_redis writes it (the process spawn replaced)."""
    from .test_cluster_config import _cluster

    monkeypatch.setattr(load_stack(), "_check_port_free", lambda *a: None)
    cls = _cluster().Cluster
    spawned = []
    monkeypatch.setattr(cls, "_spawn", lambda self, name, argv, log, env=None: spawned.append(argv))
    cls(state=tmp_path).start_redis()
    assert spawned and spawned[0][-1] == str(tmp_path / "redis" / "redis.conf")
    conf = _conf((tmp_path / "redis" / "redis.conf").read_text().splitlines())
    assert _memory_lines(conf) == rm.memory_config()


def test_kubernetes_redis_has_maxmemory_and_the_derived_limit():
    lines, resources = _k8s_redis()
    assert [f"{k} {v}" for k, v in lines.items() if k in ("maxmemory", "maxmemory-policy",
                                                           "hash-max-listpack-value")] == rm.memory_config()
    limit = resources["limits"]["memory"]
    assert limit == f"{rm.DEPLOY_SIZING.limit_mi()}Mi"
    assert resources["requests"]["memory"] == limit


def test_compose_redis_has_maxmemory_and_the_derived_limit():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    redis = compose["services"]["redis"]
    cmd = redis["command"]
    flags = {cmd[i].removeprefix("--"): cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert [f"{k} {flags[k]}" for k in ("maxmemory", "maxmemory-policy", "hash-max-listpack-value")] \
        == rm.memory_config()
    assert redis["mem_limit"] == f"{rm.DEPLOY_SIZING.limit_mi()}m"


@pytest.mark.parametrize("number", [
    lambda d: f"maxmemory {d.maxmemory_mb()}mb",
    lambda d: f"{d.limit_mi()}Mi",
])
def test_readme_has_the_worked_numbers(number):
    text = (DEPLOY / "README.md").read_text()
    assert number(rm.DEPLOY_SIZING) in text
