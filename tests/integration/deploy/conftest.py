"""The clustered local stack for the drills: 3 Kafka brokers, Redis, a Ray head + 2 workers, the
Serve app deployed with ``serve deploy`` — real processes on ports of their own
(deploy/local/cluster.py), in a fresh state folder, torn down completely at the end."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
FRAME_SIZE = 64


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: starts the clustered local stack (3 Kafka brokers, 3 Ray nodes); "
        "run under `flock /tmp/grdline-it.lock`")


def load_cluster() -> ModuleType:
    name = "grdline_local_cluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "deploy" / "local" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[object]:
    """The running cluster with the app deployed and its replicas spread over both workers."""
    from model.artefact import save_untrained

    c = load_cluster()
    cl = c.Cluster(tmp_path_factory.mktemp("cluster"))
    t0 = time.monotonic()
    try:
        cl.up(frames_leader=1)
        model = save_untrained(cl.state / "model", profile="line", image_size=FRAME_SIZE, channels=1, seed=0)
        # No deadlines in the drill: every frame is decided by the model (a fail-safe late reject
        # would also be a result, but would hide whether the model answered).
        config = c.serve_config(model, overrides={"deadline": {"default_deadline_ms": None},
                                                  "recipes": {"vials": {"deadline_ms": None}}})
        (app,) = config["applications"]
        tuning = next(d for d in app["deployments"] if d["name"] == "GRDNetModel")["user_config"]
        tuning["threshold"] = -1.0  # every frame defective: every item must be rejected exactly once
        cl.deploy_serve(config)
        wait_for(lambda: cl.replica_nodes() == {"GRDNetModel": ["w1", "w2"], "LineIngress": ["w1", "w2"]},
                 300, "the Serve app RUNNING with one model and one ingress replica per worker",
                 state=lambda: cl.serve_status().get("status"))
        print(f"\ncluster up and app deployed in {time.monotonic() - t0:.0f}s: {cl.replica_nodes()}")
        yield cl
    finally:
        stopped = cl.down(fast=True)
        print(f"cluster down: {', '.join(stopped)}")
        assert not cl.ray_pids(), "Ray processes left behind"
        # keep Ray's logs (Serve's and every worker's, where the ingress logs) with the test's
        # state (pytest keeps the last runs), drop the rest of Ray's session folder
        logs = cl.ray_temp / "session_latest" / "logs"
        if logs.is_dir():
            shutil.copytree(logs, cl.state / "ray-logs", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock", "events"))
        shutil.rmtree(cl.ray_temp, ignore_errors=True)
        from inference.stack_cli import load_stack

        stack = load_stack()
        ports = [*c.KAFKA_PORTS.values(), *c.KAFKA_CONTROLLER_PORTS.values(), c.REDIS_PORT,
                 c.RAY_GCS_PORT, c.RAY_DASHBOARD_PORT]
        assert not [p for p in ports if stack._port_open(p)], "a cluster port still answers"


def wait_for(cond, timeout_s: float, what: str, interval_s: float = 0.5, state=None):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except Exception as exc:  # noqa: BLE001 - services coming up: keep polling, report the last error
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval_s)
    seen = f"; state: {state()!r}" if state is not None else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r}){seen}")
