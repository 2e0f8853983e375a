"""Drill 5: Redis restarts mid-stream — a clean restart, then ``SHUTDOWN NOSAVE`` — and, once the
line is idle, a crash (``kill -9``). Results and reject claims survive within the fsync window the
README states (AOF, ``appendfsync everysec``: a clean shutdown loses nothing, a crash at most the
last second); decisions resume within seconds; no item is rejected twice."""

from __future__ import annotations

import time

from inference.contracts import reject_claim_key, result_key

from .conftest import (
    Streamer,
    assert_line_promise,
    line_config,
    read_results,
    redis_answers,
    report,
    restored,
    running,
    wait_all_decided,
    wait_assigned,
    wait_decided_count,
    workload,
)

#: After Redis answers again, the first new decision comes within this.
RESUME_BOUND_S = 15.0


def test_redis_restart_and_nosave_shutdown_keep_results_and_claims(
    stack, app_config, kafka_settings, redis_client, redis_prefix, serve_instance, watch
):
    w = workload(cameras=3, per_camera=50, seed=5)
    cfg = line_config(app_config, w)
    figures = {}
    with running(cfg) as ingress:
        wait_assigned(ingress)
        decisions = watch()
        streamer = Streamer(kafka_settings, cfg.topics.frames, w, rate_hz=15)
        streamer.start()
        for n, mode in ((30, "shutdown"), (75, "nosave")):
            wait_decided_count(decisions, n, 90)
            before = set(read_results(redis_client, redis_prefix, w.ids))
            with restored(stack, "redis"):
                t0 = time.monotonic()
                stack.restart_redis(mode)
                t_up = time.monotonic()
            redis_answers(redis_client)
            kept = set(read_results(redis_client, redis_prefix, w.ids))
            assert before <= kept, f"{mode}: {len(before - kept)} results written before it were lost"
            figures[f"{mode}_down"] = t_up - t0
            figures[f"{mode}_first_decision_after_up"] = decisions.first_decision_after(t_up)
        streamer.finish()
        figures["drain_after_stream"] = wait_all_decided(redis_client, redis_prefix, w.ids, 120)
    slow = {k: v for k, v in figures.items() if k.endswith("_after_up") and v > RESUME_BOUND_S}
    outcome = assert_line_promise(w, redis_client, redis_prefix, kafka_settings, cfg.topics.rejects)
    rejected = {(c.line_id, c.item_id) for c in outcome.rejects}
    claims = [reject_claim_key(redis_prefix, line, item) for line, item in sorted(rejected)]
    assert all(redis_client.exists(k) for k in claims), "reject claims lost across the restarts"

    # a crash of an idle Redis: everything older than the fsync window is on disk
    keys = [result_key(redis_prefix, fid) for fid in w.ids] + claims
    time.sleep(stack.REDIS_FSYNC_WINDOW_S + 1.0)
    with restored(stack, "redis"):
        stack.restart_redis("kill")
    redis_answers(redis_client)
    lost = [k for k in keys if not redis_client.exists(k)]
    report("drill 5 redis restarts", frames=len(w.ids), rejected_items=len(rejected),
           lost_after_kill9=len(lost), bound=RESUME_BOUND_S, **figures)
    assert not lost, f"{len(lost)} keys older than the fsync window lost by kill -9: {lost[:5]}"
    assert not slow, f"decisions resumed later than {RESUME_BOUND_S}s after Redis was back: {slow}"
