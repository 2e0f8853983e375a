"""Health that sees a line that stopped deciding — real Kafka, Redis and Serve:

* the frames topic does not exist (misnamed): the ingress holds no partition and its health
  turns red after ``ingress.unassigned_unhealthy_s`` naming the missing topic; Serve shows the
  application UNHEALTHY (what the "Serve application not RUNNING" alert reads);
* a hung predict (the stand-in's ``hang`` fault: the predict thread never returns): the frames are
  decided fail-safe by the ingress (no verdict, no pass), the model's health turns red after
  ``model.max_batch_stall_s`` naming the hung batch, Serve shows the deployment UNHEALTHY, and the
  line decides again once the fault is lifted.

Times (deploy or fault → red → UNHEALTHY) are printed (``-s``) and asserted against generous bounds.
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
    wait_assigned,
    wait_for,
)


def test_a_missing_frames_topic_turns_the_ingress_red_and_the_app_unhealthy(stack, app_config, serve_instance):
    bound_s = 25.0  # must exceed the test groups' max_poll_interval_ms (20 s)
    cfg = app_config(partitions=1, standin={"batch_latency_ms": 5}, ingress={"unassigned_unhealthy_s": bound_s})
    cfg = cfg.model_copy(update={"topics": cfg.topics.model_copy(update={"frames": f"missing-{cfg.app_name}"})})
    t0 = time.monotonic()
    with running(cfg) as ingress:
        wait_for(lambda: ingress.stats.remote().result()["consumer_ready"], 60, "consumer connected")
        assert health(ingress) is None  # inside the bound: could be a rebalance
        red = wait_for(lambda: health(ingress), bound_s + 30, "ingress health red")
        red_s = time.monotonic() - t0
        assert "does not exist or has no partitions" in red and cfg.topics.frames in red, red
        wait_for(lambda: serve_status(cfg.app_name) == "UNHEALTHY", 90, "the Serve app UNHEALTHY", interval_s=1.0)
        unhealthy_s = time.monotonic() - t0
    print(f"missing topic: ingress health red {red_s:.1f}s after deploy (bound {bound_s:.0f}s), "
          f"application UNHEALTHY {unhealthy_s:.1f}s after deploy", flush=True)
    assert red_s <= bound_s + 30


def test_a_hung_predict_turns_the_model_red_its_frames_fail_safe_and_the_line_recovers(
    stack, app_config, produce, redis_client, redis_prefix, serve_instance
):
    from inference.app import run

    stall_s = 5.0
    cfg = app_config(partitions=1, standin={"batch_latency_ms": 5}, tuning={"max_batch_size": 4},
                     deadline={"default_bound_ms": 2000},
                     model={"max_batch_stall_s": stall_s, "max_queue_age_s": 2 * stall_s})
    before, during, after = (simulated_frames(cameras=1, per_camera=4, seed=s) for s in (51, 52, 53))

    def decided(frames) -> dict:
        ids = [f.frame_id for f in frames]
        return wait_for(lambda: (r := results(redis_client, redis_prefix, ids)) and len(r) == len(ids) and r,
                        120, f"{len(ids)} frames decided")

    with running(cfg) as ingress:
        model = model_handle(cfg)
        wait_assigned(ingress)
        produce(cfg.topics.frames, [encoded(f) for f in before])
        assert all(r.failsafe is None for r in decided(before).values())
        assert health(model) is None
        run(cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"fault": "hang"})}))  # live
        t_fault = time.monotonic()
        produce(cfg.topics.frames, [encoded(f) for f in during])
        red = wait_for(lambda: health(model), stall_s + 30, "model health red")
        red_s = time.monotonic() - t_fault
        assert "no batch finished" in red and "hung predict" in red, red
        got = decided(during)
        assert all(r.failsafe is not None and r.decision for r in got.values()), got  # no verdict, no pass
        wait_for(lambda: serve_status(cfg.app_name, "GRDNetModel") == "UNHEALTHY", 90, "the model deployment UNHEALTHY",
                 interval_s=1.0)
        unhealthy_s = time.monotonic() - t_fault
        t_lift = time.monotonic()
        run(cfg)  # the fault lifted (live reconfigure; Serve may have replaced the hung replica by now)
        produce(cfg.topics.frames, [encoded(f) for f in after])
        assert all(r.failsafe is None and r.score is not None for r in decided(after).values())
        wait_for(lambda: health(model_handle(cfg)) is None and serve_status(cfg.app_name) == "RUNNING", 120,
                 "the app RUNNING and the model green again", interval_s=1.0)
        recovered_s = time.monotonic() - t_lift
    print(f"hung predict: model health red {red_s:.1f}s after the fault (bound {stall_s:.0f}s), deployment "
          f"UNHEALTHY after {unhealthy_s:.1f}s; model inspecting again and the app RUNNING {recovered_s:.1f}s after lifting it",
          flush=True)
    assert red_s <= stall_s + 30
