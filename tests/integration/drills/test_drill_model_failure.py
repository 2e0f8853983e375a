"""Drill 3: the model raises for every frame for a while, then recovers by itself.

While it fails, no part ships uninspected: each frame is decided by the fail-safe policy (a reject
marked ``failsafe=model_failure``, one reject command per item), never passed and never only
dead-lettered. When the fault ends the line returns to model verdicts within a stated time, and
frames sent after that are decided exactly as the model scores them.

The fault: the project's own ``GRDNetModel`` (batching, fail-safe, health check) around a
predictor that raises while a flag file exists (``flaky_model.py``); the app is built by
``inference.app`` as usual.
"""

from __future__ import annotations

import time

import inference.app

from .conftest import (
    Streamer,
    assert_line_promise,
    line_config,
    read_results,
    report,
    running,
    wait_all_decided,
    wait_assigned,
    wait_decided_count,
    wait_for,
    workload,
)
from .flaky_model import flaky_deployment

FAULT_S = 8.0
#: After the fault ends, frames get model verdicts again within this (a replica Serve replaced
#: for failing its health check may have to start first).
RECOVERY_BOUND_S = 45.0


def test_model_failing_every_frame_then_recovering(
    app_config, kafka_settings, redis_client, redis_prefix, serve_instance, watch, monkeypatch, tmp_path
):
    flag = tmp_path / "model-fails"
    monkeypatch.setattr(inference.app, "GRDNetModel", flaky_deployment(str(flag)))
    w = workload(cameras=3, per_camera=60, seed=3)
    cfg = line_config(app_config, w)
    by_id = {f.frame_id: i for i, f in enumerate(w.frames)}
    with running(cfg) as ingress:
        wait_assigned(ingress)
        decisions = watch()
        streamer = Streamer(kafka_settings, cfg.topics.frames, w, rate_hz=12)
        streamer.start()
        wait_decided_count(decisions, 24, 90)
        flag.touch()
        t_fail = time.monotonic()
        time.sleep(FAULT_S)
        flag.unlink()
        t_clear = time.monotonic()

        def recovered():
            sent_after = [f.frame_id for f, ts in zip(w.frames, streamer.sent_at, strict=False) if ts > t_clear]
            got = read_results(redis_client, redis_prefix, sent_after)
            verdicts = [r for r in got.values() if not getattr(r, "failsafe", None) and not r.late]
            return bool(verdicts) and time.monotonic()

        t_verdict = wait_for(recovered, RECOVERY_BOUND_S, "a model verdict after the fault ended")
        streamer.finish()
        drain_s = wait_all_decided(redis_client, redis_prefix, w.ids, 120)
    outcome = assert_line_promise(w, redis_client, redis_prefix, kafka_settings, cfg.topics.rejects,
                                  allow_failsafe=True)
    during = [fid for fid, why in outcome.failsafe.items() if why == "model_failure"]
    late_failsafe = [fid for fid in outcome.failsafe
                     if streamer.sent_at[by_id[fid]] > t_verdict + 2.0]
    report("drill 3 model fails then recovers", frames=len(w.ids), fault=t_clear - t_fail,
           failsafe_rejects=len(during), recovery_after_fault_end=t_verdict - t_clear,
           drain_after_stream=drain_s, bound=RECOVERY_BOUND_S)
    assert during, "no frame was decided by the fail-safe policy: the fault did not reach the line"
    assert set(outcome.failsafe.values()) <= {"model_failure", "timeout"}, outcome.failsafe
    assert not late_failsafe, f"frames sent after recovery still fail-safe: {late_failsafe[:5]}"
