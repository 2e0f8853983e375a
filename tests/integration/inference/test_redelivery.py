"""An ingress replica dies mid-stream: nothing is lost, no item is rejected twice."""

from __future__ import annotations

from .conftest import (
    count_results,
    encoded,
    read_rejects,
    results,
    running,
    simulated_frames,
    split_threshold,
    standin_scores,
    wait_for,
)


def test_ingress_killed_mid_stream_loses_nothing_and_rejects_once(
    app_config, produce, kafka_settings, redis_client, redis_prefix, serve_instance
):
    import ray

    frames = simulated_frames(cameras=3, per_camera=60, seed=21)
    scores = standin_scores(frames)
    threshold = split_threshold(scores)
    defective_items = {f.item_id for f, s in zip(frames, scores, strict=True) if s >= threshold}
    assert defective_items
    cfg = app_config(
        partitions=3, standin={"batch_latency_ms": 100, "threshold": threshold},
        tuning={"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
        ingress={"inflight_window": 16, "commit_interval_ms": 100},
    )
    produce(cfg.topics.frames, [encoded(f) for f in frames])
    ids = [f.frame_id for f in frames]
    with running(cfg) as ingress:
        wait_for(lambda: count_results(redis_client, redis_prefix) >= 30, 90, "first results")
        victim = ingress.stats.remote().result()
        ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
        decided_at_kill = count_results(redis_client, redis_prefix)
        assert decided_at_kill < len(frames), "the kill must happen mid-stream"
        decided = lambda: count_results(redis_client, redis_prefix)  # noqa: E731
        wait_for(lambda: decided() == len(frames), 180, "every frame decided",
                 state=lambda: {"decided": decided(), "ingress": ingress.stats.remote().result()})
        after = wait_for(lambda: (s := ingress.stats.remote().result())["pid"] != victim["pid"] and s, 60,
                         "the replacement replica")
    got = results(redis_client, redis_prefix, ids)
    assert sorted(got) == sorted(ids)
    for f, s in zip(frames, scores, strict=True):
        assert got[f.frame_id].decision == bool(s >= threshold)
    cmds = read_rejects(kafka_settings, cfg.topics.rejects, expected=len(defective_items), settle_s=3.0)
    items = [c.item_id for c in cmds]
    assert len(items) == len(set(items)), f"duplicate rejects: {sorted(items)}"
    assert set(items) == defective_items
    assert after["consumed"] > 0  # the replacement re-read what the dead replica had not committed
