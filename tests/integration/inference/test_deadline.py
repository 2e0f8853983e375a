"""A deadline shorter than the model's latency: the late policy applies and is counted."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from .conftest import (
    encoded,
    read_rejects,
    results,
    running,
    simulated_frames,
    wait_assigned,
    wait_for,
)

LATENCY_MS = 1000
DEADLINE_MS = 200


@pytest.mark.parametrize("policy", ["reject", "pass"])
def test_deadline_shorter_than_model_latency_triggers_late_policy(
    policy, app_config, produce, kafka_settings, redis_client, redis_prefix, serve_instance
):
    cfg = app_config(
        partitions=1, standin={"batch_latency_ms": LATENCY_MS, "threshold": 2.0},  # would pass everything
        tuning={"max_batch_size": 4, "batch_wait_timeout_s": 0.01},
        deadline={"late_policy": policy, "sink_margin_ms": 5},
    )
    with running(cfg) as ingress:
        wait_assigned(ingress)
        frames = simulated_frames(cameras=2, per_camera=4, seed=8)
        now = datetime.now(UTC)  # captured just now: the budget is the deadline, not rendering time
        frames = [dataclasses.replace(f, captured_at=now) for f in frames]
        produce(cfg.topics.frames, [encoded(f, deadline_ms=DEADLINE_MS) for f in frames])
        ids = [f.frame_id for f in frames]
        got = wait_for(lambda: (r := results(redis_client, redis_prefix, ids)) and len(r) == len(ids) and r,
                       60, "late results")
        stats = ingress.stats.remote().result()
    for r in got.values():
        assert r.late and r.late_policy == policy and r.score is None
        assert r.decision is (policy == "reject")
        assert r.deadline_at is not None and r.decided_at >= r.deadline_at.replace(microsecond=0)
        assert r.timings_ms.total < LATENCY_MS  # decided at the deadline, not when the model finished
    assert stats["late"] == len(frames)
    items = {f.item_id for f in frames}
    cmds = read_rejects(kafka_settings, cfg.topics.rejects, expected=len(items) if policy == "reject" else 0)
    if policy == "reject":
        assert sorted(c.item_id for c in cmds) == sorted(items)
        assert all(c.reason == "late" for c in cmds)
    else:
        assert cmds == []
