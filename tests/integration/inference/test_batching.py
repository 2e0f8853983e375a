"""Batches form under a burst; batch size and thresholds change live without a restart.

Deployed declaratively (a Serve config, as ``serve deploy`` does) because that is the path on
which a changed ``user_config`` is applied to running replicas: an imperative ``serve.run`` gives
every deploy a new code version and restarts the replicas.
"""

from __future__ import annotations

from typing import Any

from inference.config import ServeAppConfig

from .conftest import count_results, encoded, model_handle, simulated_frames, wait_for

BATCH = 16


def deploy_declarative(cfg: ServeAppConfig, user_config: dict[str, Any]) -> None:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate({
        "applications": [{
            "name": cfg.app_name,
            "route_prefix": cfg.route_prefix,
            "import_path": "inference.app:build_app",
            "args": {"config": cfg.model_dump(mode="json", exclude={"tuning"})},
            "deployments": [{"name": "GRDNetModel", "user_config": user_config}],
        }]
    })
    _get_global_client().deploy_apps(schema, _blocking=True)


def test_batches_fill_under_burst_and_reconfigure_is_live(
    app_config, produce, redis_client, redis_prefix, serve_instance
):
    from ray import serve

    frames = simulated_frames(cameras=2, per_camera=160, seed=3, defect_rate=0.0)
    cfg = app_config(
        partitions=2, standin={"batch_latency_ms": 40, "image_size": 64},
        ingress={"inflight_window": 4 * BATCH},
    )
    produce(cfg.topics.frames, [encoded(f) for f in frames])  # the burst waits before the app starts
    deploy_declarative(cfg, {"max_batch_size": BATCH, "batch_wait_timeout_s": 0.2})
    try:
        model = model_handle(cfg)
        wait_for(lambda: count_results(redis_client, redis_prefix) == len(frames), 120, "burst decided")
        s1 = model.stats.remote().result()
        mean = s1["frames"] / s1["batches"]
        assert s1["frames"] == len(frames)
        assert mean >= 0.8 * BATCH, f"mean batch {mean:.1f} < 0.8 x {BATCH}"

        deploy_declarative(cfg, {"max_batch_size": 4, "batch_wait_timeout_s": 0.2, "threshold": 0.0})
        wait_for(lambda: model.stats.remote().result()["tuning"]["max_batch_size"] == 4, 60, "reconfigure")
        s2 = model.stats.remote().result()
        assert s2["pid"] == s1["pid"], "a user_config change must not restart the replica"
        more = simulated_frames(cameras=1, per_camera=40, seed=4, defect_rate=0.0)
        produce(cfg.topics.frames, [encoded(f) for f in more])
        total = len(frames) + len(more)
        wait_for(lambda: count_results(redis_client, redis_prefix) == total, 120, "second burst decided")
        s3 = model.stats.remote().result()
        assert s3["frames"] - s2["frames"] == len(more)
        assert s3["batches"] - s2["batches"] >= len(more) / 4  # no batch above the new maximum
        assert s3["threshold"] == 0.0 and s3["pid"] == s1["pid"]
    finally:
        serve.delete(cfg.app_name, _blocking=True)
