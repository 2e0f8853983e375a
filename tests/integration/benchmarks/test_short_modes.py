"""The benchmarks that need the local stack (and Ray) run in their ``--short`` mode and write their
JSON (issue 18: ``make soak`` and ``make bench`` had failed at import for months, unnoticed).

bench_pipeline, bench_scaling and soak start a Ray of their own (``address="local"``, metrics on a
free port): after each, the session's Ray still runs tasks and still exports on
``RAY_METRICS_PORT``, where Prometheus scrapes it."""

from __future__ import annotations

import urllib.request

import pytest

from inference.settings import RAY_METRICS_PORT

pytestmark = pytest.mark.slow


@pytest.fixture
def session_ray_survives(stack, ray_session):
    """The session's Ray works before and after the test's program ran."""
    import ray

    @ray.remote
    def ping() -> int:
        return 1

    assert ray.get(ping.remote(), timeout=120) == 1
    yield
    assert ray.is_initialized()
    assert ray.get(ping.remote(), timeout=120) == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{RAY_METRICS_PORT}/metrics", timeout=30) as r:
        assert r.status == 200


def test_bench_ingest_short(stack, run_short):
    out, _ = run_short("bench_ingest.py", 300)
    assert {"kafka", "frames", "partitions", "cases", "short"} <= out.keys()


def test_bench_pipeline_short(session_ray_survives, run_short):
    out, _ = run_short("bench_pipeline.py", 400)
    assert {"benchmark", "bare", "phases", "goals", "short"} <= out.keys()


def test_bench_scaling_short(session_ray_survives, run_short):
    out, _ = run_short("bench_scaling.py", 400)
    assert {"args", "per_replica_ideal_fps", "rows", "short"} <= out.keys()


def test_soak_short_decides_every_frame(session_ray_survives, run_short):
    """Exit 0 means every frame was decided with no dead letter (the short run's one judged goal)."""
    out, _ = run_short("soak.py", 400)
    assert {"sent", "decided", "memory", "redis", "goals", "pass", "result_ttl_s", "short"} <= out.keys()
