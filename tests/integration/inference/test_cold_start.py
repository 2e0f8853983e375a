"""Cold start in any order, and health that sees a line that cannot decide — real Kafka, Redis, Serve.

* The app is deployed while the broker is stopped: it reaches RUNNING at once (no replica
  constructor waits for Kafka, so Serve never counts failed constructions towards
  ``DEPLOY_FAILED``), the ingress is healthy during its start-up grace and red after it, naming
  Kafka; once the broker is started the frames already on the topic are decided.
* The frames topic does not exist (misnamed): the ingress holds no partition, its health turns
  red after ``ingress.unassigned_unhealthy_s`` naming the missing topic, and Serve shows the
  application UNHEALTHY.

The broker is stopped with the stack module's own function and always started again (``finally``):
other tests share it. Times are printed (``-s``) and asserted only against generous bounds.
"""

from __future__ import annotations

import time

import pytest

from .conftest import encoded, model_handle, results, running, simulated_frames, wait_for

#: The ingress' start-up grace in this test (production default: 120 s).
GRACE_S = 10.0
#: Broker down this long after the app is RUNNING (the brief: start the broker after ~10-15 s).
DOWN_AFTER_DEPLOY_S = 14.0


def _health(handle) -> str | None:
    """None when the deployment's ``check_health`` passes, else its error text."""
    try:
        handle.check_health.remote().result(timeout_s=30)
        return None
    except Exception as exc:  # noqa: BLE001 - the red health check's message is what we assert on
        return str(exc)


def _app_status(name: str) -> str:
    from ray import serve

    app = serve.status().applications.get(name)
    return "absent" if app is None else str(app.status)


def test_app_deployed_while_kafka_is_down_runs_and_decides_once_the_broker_starts(
    stack, app_config, produce, redis_client, redis_prefix, serve_instance
):
    frames = simulated_frames(cameras=2, per_camera=6, seed=41)
    ids = [f.frame_id for f in frames]
    cfg = app_config(partitions=2, standin={"batch_latency_ms": 5}, tuning={"max_batch_size": 4},
                     ingress={"connect_grace_s": GRACE_S, "connect_backoff_max_s": 1.0})
    produce(cfg.topics.frames, [encoded(f) for f in frames])  # on the topic before the outage
    try:
        stack.stop("kafka")
        assert not stack.kafka_ready()
        t_deploy = time.monotonic()
        with running(cfg) as ingress:  # returns once Serve reports the app RUNNING
            deployed_s = time.monotonic() - t_deploy
            assert not stack.kafka_ready(), "the broker came back by itself?"
            assert _app_status(cfg.app_name).endswith("RUNNING")
            assert _health(ingress) is None, "red inside the start-up grace"
            s = ingress.stats.remote().result()
            assert not s["consumer_ready"] and s["partitions"] == []
            # past the grace, still no broker: red, naming Kafka
            red = wait_for(lambda: _health(ingress), GRACE_S + 20, "ingress health red past the grace")
            red_s = time.monotonic() - t_deploy
            assert "Kafka not reachable" in red and "ingress.connect_grace_s" in red, red
            assert _health(model_handle(cfg)) is None  # the model has nothing to do with Kafka
            time.sleep(max(0.0, t_deploy + DOWN_AFTER_DEPLOY_S - time.monotonic()))
            t_start = time.monotonic()
            stack.start_kafka()
            t_up = time.monotonic()
            wait_for(lambda: len(results(redis_client, redis_prefix, ids)) == len(ids), 150,
                     "every frame decided after the broker started",
                     state=lambda: ingress.stats.remote().result())
            decided_s = time.monotonic() - t_up
            wait_for(lambda: _health(ingress) is None, 60, "ingress health green again")
            assert _app_status(cfg.app_name).endswith("RUNNING")
            got = results(redis_client, redis_prefix, ids)
    finally:
        if not stack.kafka_ready():
            stack.start_kafka()
    print(f"cold start: app RUNNING {deployed_s:.1f}s after deploy with the broker down; health red "
          f"{red_s:.1f}s after deploy (grace {GRACE_S:.0f}s); broker start took {t_up - t_start:.1f}s; "
          f"all {len(ids)} frames decided {decided_s:.1f}s after the broker answered", flush=True)
    assert all(r.score is not None for r in got.values())
    assert deployed_s < 60, f"deploying took {deployed_s:.0f}s with the broker down"
    assert red_s <= GRACE_S + 20
    assert decided_s < 120


@pytest.mark.parametrize("bound_s", [25.0])
def test_a_missing_frames_topic_turns_the_ingress_red_and_the_app_unhealthy(
    stack, app_config, serve_instance, bound_s
):
    cfg = app_config(partitions=1, standin={"batch_latency_ms": 5},
                     ingress={"unassigned_unhealthy_s": bound_s})
    cfg = cfg.model_copy(update={"topics": cfg.topics.model_copy(update={"frames": f"missing-{cfg.app_name}"})})
    t0 = time.monotonic()
    with running(cfg) as ingress:
        wait_for(lambda: ingress.stats.remote().result()["consumer_ready"], 60, "consumer connected")
        assert _health(ingress) is None  # inside the bound: could be a rebalance
        red = wait_for(lambda: _health(ingress), bound_s + 30, "ingress health red")
        red_s = time.monotonic() - t0
        assert "does not exist or has no partitions" in red and cfg.topics.frames in red, red
        wait_for(lambda: _app_status(cfg.app_name).endswith("UNHEALTHY"), 90, "the Serve app UNHEALTHY",
                 interval_s=1.0)
        unhealthy_s = time.monotonic() - t0
    print(f"missing topic: ingress health red {red_s:.1f}s after deploy (bound {bound_s:.0f}s), "
          f"application UNHEALTHY after {unhealthy_s:.1f}s", flush=True)
    assert red_s <= bound_s + 30
