"""Cold start in any order — real Kafka, Redis, Serve: the app is deployed while the broker is
stopped. It reaches RUNNING at once (no replica constructor waits for Kafka, so Serve never counts
failed constructions towards ``DEPLOY_FAILED``), the ingress is healthy during its start-up grace
and red after it, naming Kafka; once the broker is started the frames already on the topic are
decided and the ingress is green again.

The broker is stopped with the stack module's own function and always started again (``finally``):
other tests share it. Times are printed (``-s``) and asserted only against generous bounds.
"""

from __future__ import annotations

import time

from .conftest import (
    encoded,
    health,
    model_handle,
    results,
    running,
    serve_status,
    simulated_frames,
    wait_for,
)

#: The ingress' start-up grace in this test (production default: 120 s).
GRACE_S = 10.0
#: Broker down this long after the app is RUNNING (the brief: start the broker after ~10-15 s).
DOWN_AFTER_DEPLOY_S = 14.0


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
            assert serve_status(cfg.app_name) == "RUNNING"
            assert health(ingress) is None, "red inside the start-up grace"
            s = ingress.stats.remote().result()
            assert not s["consumer_ready"] and s["partitions"] == []
            # past the grace, still no broker: red, naming Kafka
            red = wait_for(lambda: health(ingress), GRACE_S + 20, "ingress health red past the grace")
            red_s = time.monotonic() - t_deploy
            assert "Kafka not reachable" in red and "ingress.connect_grace_s" in red, red
            assert health(model_handle(cfg)) is None  # the model has nothing to do with Kafka
            time.sleep(max(0.0, t_deploy + DOWN_AFTER_DEPLOY_S - time.monotonic()))
            t_start = time.monotonic()
            stack.start_kafka()
            t_up = time.monotonic()
            wait_for(lambda: len(results(redis_client, redis_prefix, ids)) == len(ids), 150,
                     "every frame decided after the broker started",
                     state=lambda: ingress.stats.remote().result())
            decided_s = time.monotonic() - t_up
            wait_for(lambda: health(ingress) is None, 60, "ingress health green again")
            assert serve_status(cfg.app_name) == "RUNNING"
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
