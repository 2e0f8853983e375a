"""Drill 8: reject sends time out — the broker is frozen (SIGSTOP) for longer than the reject
producer's delivery timeout while decided frames are waiting to be actuated.

A timed-out send must neither be lost (the item stays claimed and is sent once the broker is back)
nor be sent twice (kafka-python may still deliver the first attempt): exactly one reject command
per defective item, none for a good one, every frame decided, decisions resume after SIGCONT."""

from __future__ import annotations

import time

from .conftest import (
    Streamer,
    assert_line_promise,
    line_config,
    report,
    restored,
    running,
    wait_all_decided,
    wait_assigned,
    wait_decided_count,
    workload,
)

DELIVERY_TIMEOUT_MS = 4000
PAUSE_S = 10.0  # > the delivery timeout by 6 s
#: After the broker runs again, the first new decision comes within this.
RESUME_BOUND_S = 20.0


def test_reject_send_timeout_while_broker_paused(
    stack, app_config, kafka_settings, redis_client, redis_prefix, serve_instance, watch
):
    w = workload(cameras=3, per_camera=40, seed=8, defect_rate=0.5)
    # a slow model with a deep window: decided frames keep coming while the broker is frozen
    cfg = line_config(app_config, w, standin={"batch_latency_ms": 400}, tuning={"max_batch_size": 4},
                      ingress={"inflight_window": 32},
                      sink={"delivery_timeout_ms": DELIVERY_TIMEOUT_MS, "reject_takeover_s": 15.0})
    with running(cfg) as ingress:
        wait_assigned(ingress)
        decisions = watch()
        streamer = Streamer(kafka_settings, cfg.topics.frames, w, rate_hz=20)
        streamer.start()
        wait_decided_count(decisions, 20, 90)
        with restored(stack, "kafka"):
            before = decisions.last()
            t_pause = time.monotonic()
            stack.pause_kafka()
            time.sleep(PAUSE_S)
            during = decisions.last() - before
            stack.resume_kafka()
            t_resume = time.monotonic()
        resume_s = decisions.first_decision_after(t_resume)
        streamer.finish()
        drain_s = wait_all_decided(redis_client, redis_prefix, w.ids, 180)
    report("drill 8 reject send timeout", frames=len(w.ids), paused=t_resume - t_pause,
           decided_while_paused=during, first_decision_after_resume=resume_s, drain_after_stream=drain_s,
           delivery_timeout_s=DELIVERY_TIMEOUT_MS / 1000, bound=RESUME_BOUND_S)
    assert during > 0, "no frame was decided while the broker was paused: no reject send was in doubt"
    assert_line_promise(w, redis_client, redis_prefix, kafka_settings, cfg.topics.rejects)
    assert resume_s <= RESUME_BOUND_S, f"decisions resumed {resume_s:.1f}s after SIGCONT"
