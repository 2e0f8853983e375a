"""Bad frames go to the dead-letter topic with a reason, and those whose line and item can be read
are rejected too (no verdict, no pass); good frames keep flowing."""

from __future__ import annotations

import dataclasses

from inference.contracts import RejectCommand
from ingest.dlq import parse_dead_letter

from .conftest import encoded, read_all, results, running, simulated_frames, wait_for


def test_bad_frames_are_dead_lettered_with_reason_and_good_ones_decided(
    app_config, produce, kafka_settings, redis_client, redis_prefix, serve_instance
):
    good = simulated_frames(cameras=2, per_camera=10, seed=5)
    k, v, h = encoded(good[0])
    def own(headers, fid: bytes):  # each bad record its own frame and item: its reject is its own
        return [(n, x) for n, x in headers if n not in ("item_id", "frame_id")] + [("frame_id", fid), ("item_id", fid)]

    corrupt = (k, v[: len(v) // 3], own(h, b"bad-corrupt"))
    no_item = (k, v, [(n, x) for n, x in h if n not in ("item_id", "frame_id")] + [("frame_id", b"bad-noitem")])
    wrong_size = (k, v, own([(n, b"65" if n == "width" else x) for n, x in h], b"bad-size"))
    unknown_recipe = encoded(dataclasses.replace(good[1], recipe="no-such-recipe", frame_id="bad-recipe",
                                                 item_id="bad-recipe"))
    records = [encoded(f) for f in good]
    for i, bad in enumerate((corrupt, no_item, wrong_size, unknown_recipe)):
        records.insert(3 + 4 * i, bad)
    cfg = app_config(partitions=2, standin={"batch_latency_ms": 10}, tuning={"max_batch_size": 4})
    produce(cfg.topics.frames, records)
    ids = [f.frame_id for f in good]
    with running(cfg):
        wait_for(lambda: len(results(redis_client, redis_prefix, ids)) == len(ids), 90, "good frames decided")
        dlq = read_all(kafka_settings, cfg.topics.dlq, expected=4)
    letters = {dl.frame_id: dl for dl in (parse_dead_letter(r.value, r.headers, key=r.key) for r in dlq)}
    assert sorted(letters) == ["bad-corrupt", "bad-noitem", "bad-recipe", "bad-size"]
    assert letters["bad-corrupt"].stage == "decode" and letters["bad-corrupt"].field == "value"
    assert "item_id" in letters["bad-noitem"].reason and letters["bad-noitem"].stage == "decode"
    assert letters["bad-size"].field == "width"
    assert letters["bad-recipe"].stage == "validate" and "no-such-recipe" in letters["bad-recipe"].reason
    for dl in letters.values():
        assert dl.topic == cfg.topics.frames and dl.offset >= 0 and dl.key == k
    assert letters["bad-corrupt"].value == corrupt[1]  # the original bytes, untouched
    stored = results(redis_client, redis_prefix, list(letters))
    assert sorted(stored) == ["bad-corrupt", "bad-recipe", "bad-size"]  # bad-noitem: no item to reject
    for fid, r in stored.items():
        assert r.decision and r.failsafe == "invalid_input" and r.score is None, fid
    rejects = [RejectCommand.from_kafka(r.value) for r in read_all(kafka_settings, cfg.topics.rejects, expected=3)]
    assert sorted((c.item_id, c.reason) for c in rejects if c.item_id.startswith("bad-")) == [
        ("bad-corrupt", "invalid_input"), ("bad-recipe", "invalid_input"), ("bad-size", "invalid_input")]
