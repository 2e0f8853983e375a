"""Drills 1 and 2: a replica is killed mid-stream. (1) the ingress replica (its consumer, its
in-flight window, its uncommitted offsets); (2) a model replica while it runs a batch. Serve
replaces what died; every frame is decided once by the model (no fail-safe verdicts: a surviving
or replacement replica answers), every defective item is rejected exactly once, no good item is."""

from __future__ import annotations

import time

from .conftest import (
    Streamer,
    assert_line_promise,
    line_config,
    report,
    running,
    wait_all_decided,
    wait_assigned,
    wait_decided_count,
    wait_for,
    workload,
)

#: The longest stall after the kill ends within this (a replacement ingress has to start, join the
#: group and take the partitions over after the session timeout of the fixture: 6 s).
INGRESS_RESUME_BOUND_S = 45.0
#: After a model replica is killed, the other replica keeps deciding: any stall ends within this.
MODEL_RESUME_BOUND_S = 10.0


def _serve_actor(app_name: str, deployment: str):
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if deployment in a["name"] and app_name in a["name"]]
    assert names, f"no replica actor of {app_name}/{deployment}"
    return ray.get_actor(names[0], namespace="serve"), names[0]


def test_drill1_ingress_replica_killed_mid_stream(
    app_config, kafka_settings, redis_client, redis_prefix, serve_instance, watch
):
    import ray

    w = workload(cameras=3, per_camera=50, seed=1)
    cfg = line_config(app_config, w)
    with running(cfg) as ingress:
        wait_assigned(ingress)
        decisions = watch()
        streamer = Streamer(kafka_settings, cfg.topics.frames, w, rate_hz=15)
        streamer.start()
        wait_decided_count(decisions, 30, 90)
        victim = ingress.stats.remote().result()
        t_kill = time.monotonic()
        ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
        streamer.finish()
        t_streamed = time.monotonic()
        drain_s = wait_all_decided(redis_client, redis_prefix, w.ids, 120)
        replacement = wait_for(lambda: (s := ingress.stats.remote().result())["pid"] != victim["pid"] and s, 60,
                               "the replacement ingress replica")
        stall_s, recovered_s = decisions.recovery(t_kill, t_streamed)
    report("drill 1 ingress replica killed", frames=len(w.ids), longest_stall=stall_s,
           recovered_after_kill=recovered_s, drain_after_stream=drain_s, bound=INGRESS_RESUME_BOUND_S)
    assert recovered_s <= INGRESS_RESUME_BOUND_S, f"decisions stalled {stall_s:.1f}s, recovered {recovered_s:.1f}s after the kill"
    assert replacement["consumed"] > 0
    assert_line_promise(w, redis_client, redis_prefix, kafka_settings, cfg.topics.rejects)


def test_drill2_model_replica_killed_mid_batch(
    app_config, kafka_settings, redis_client, redis_prefix, serve_instance, watch
):
    import ray

    w = workload(cameras=3, per_camera=50, seed=2)
    # 2 model replicas, batches that take 300 ms: the kill lands inside a batch
    cfg = line_config(app_config, w, standin={"batch_latency_ms": 300}, model={"num_replicas": 2})
    with running(cfg) as ingress:
        wait_assigned(ingress)
        decisions = watch()
        streamer = Streamer(kafka_settings, cfg.topics.frames, w, rate_hz=15)
        streamer.start()
        wait_decided_count(decisions, 30, 90)
        actor, name = _serve_actor(cfg.app_name, "GRDNetModel")
        t_kill = time.monotonic()
        ray.kill(actor, no_restart=True)
        streamer.finish()
        t_streamed = time.monotonic()
        drain_s = wait_all_decided(redis_client, redis_prefix, w.ids, 120)
        stall_s, recovered_s = decisions.recovery(t_kill, t_streamed)
    report("drill 2 model replica killed", frames=len(w.ids), killed=name.rsplit("#", 1)[-1],
           longest_stall=stall_s, recovered_after_kill=recovered_s, drain_after_stream=drain_s,
           bound=MODEL_RESUME_BOUND_S)
    assert recovered_s <= MODEL_RESUME_BOUND_S, f"decisions stalled {stall_s:.1f}s, recovered {recovered_s:.1f}s after the kill"
    assert_line_promise(w, redis_client, redis_prefix, kafka_settings, cfg.topics.rejects)
