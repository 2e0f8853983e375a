"""Drill 4: the Kafka broker restarts mid-stream (stopped cleanly, a few seconds down, started
with the same data). Decisions resume within seconds of the broker answering again (the issue saw
31 s and a dead consumer thread); nothing is lost, no item is rejected twice."""

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

DOWNTIME_S = 3.0
#: After the broker answers again, the first new decision comes within this.
RESUME_BOUND_S = 10.0


def test_kafka_restart_mid_stream_decisions_resume_within_seconds(
    stack, app_config, kafka_settings, redis_client, redis_prefix, serve_instance, watch
):
    w = workload(cameras=3, per_camera=50, seed=4)
    cfg = line_config(app_config, w)
    with running(cfg) as ingress:
        wait_assigned(ingress)
        decisions = watch()
        streamer = Streamer(kafka_settings, cfg.topics.frames, w, rate_hz=15)
        streamer.start()
        wait_decided_count(decisions, 30, 90)
        with restored(stack, "kafka"):
            t_stop = time.monotonic()
            stack.restart_kafka(downtime_s=DOWNTIME_S)
            t_up = time.monotonic()
        resume_s = decisions.first_decision_after(t_up)
        streamer.finish()
        t_streamed = time.monotonic()
        drain_s = wait_all_decided(redis_client, redis_prefix, w.ids, 120)
        stall_s = decisions.longest_stall(t_stop, t_streamed)
    report("drill 4 kafka restart", frames=len(w.ids), broker_down=t_up - t_stop,
           first_decision_after_broker_up=resume_s, longest_stall=stall_s, drain_after_stream=drain_s,
           bound=RESUME_BOUND_S)
    assert_line_promise(w, redis_client, redis_prefix, kafka_settings, cfg.topics.rejects)
    assert resume_s <= RESUME_BOUND_S, f"decisions resumed {resume_s:.1f}s after the broker was back"
