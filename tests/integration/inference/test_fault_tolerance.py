"""Records and faults that used to kill or stall the line, against real Kafka, Redis and Serve:
unreadable header keys and calendar-edge timestamps are dead-lettered while the line goes on; a
failing or NaN-scoring model gives fail-safe rejects and recovers; replays and redeliveries
never actuate again."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from ingest.dlq import parse_dead_letter

from .conftest import (
    encoded,
    read_all,
    read_rejects,
    results,
    running,
    simulated_frames,
    split_threshold,
    standin_scores,
    wait_assigned,
    wait_for,
)


class _NotUtf8(str):
    """A header key kafka-python writes as bytes that are not UTF-8 (its reader then raises)."""

    def encode(self, *args, **kwargs) -> bytes:  # noqa: ARG002
        return b"\xff\xfebad"


def _with_header(record, name: str, value: bytes, frame_id: str):
    k, v, h = record
    return k, v, [(n, value if n == name else x) for n, x in h if n != "frame_id"] + [("frame_id", frame_id.encode())]


def test_unreadable_records_are_dead_lettered_and_the_line_goes_on(
    app_config, produce, kafka_settings, redis_client, redis_prefix, serve_instance
):
    good = simulated_frames(cameras=1, per_camera=12, seed=31)
    base = encoded(good[0], deadline_ms=5000)
    k, v, h = base
    bad_key = (k, v, [(n, x) for n, x in h if n != "frame_id"] + [("frame_id", b"bad-key"), (_NotUtf8("x"), b"1")])
    year1 = _with_header(base, "captured_at", b"0001-01-01T00:00:00+05:00", "bad-year1")
    year9999 = _with_header(base, "captured_at", b"9999-12-31T23:59:59.900000+00:00", "bad-year9999")
    records = [encoded(f) for f in good]
    for i, bad in enumerate((bad_key, year1, year9999)):
        records.insert(2 + 4 * i, bad)
    cfg = app_config(partitions=1, standin={"batch_latency_ms": 5}, tuning={"max_batch_size": 4})
    produce(cfg.topics.frames, records)
    ids = [f.frame_id for f in good]
    with running(cfg) as ingress:
        wait_for(lambda: len(results(redis_client, redis_prefix, ids)) == len(ids), 90, "good frames decided",
                 state=lambda: ingress.stats.remote().result())
        dlq = read_all(kafka_settings, cfg.topics.dlq, expected=3)
        stats = ingress.stats.remote().result()
    letters = [parse_dead_letter(r.value, r.headers, key=r.key) for r in dlq]
    assert len(letters) == 3
    by_offset = {dl.offset: dl for dl in letters}
    assert sorted(by_offset) == [2, 6, 10]  # the positions the bad records were produced at
    assert "not valid UTF-8" in by_offset[2].reason and by_offset[2].stage == "decode"
    assert by_offset[2].frame_id == "bad-key" and by_offset[2].value == v  # original bytes kept
    assert ("\\xff\\xfebad", b"1") in by_offset[2].headers  # the key, escaped
    assert {by_offset[6].frame_id, by_offset[10].frame_id} == {"bad-year1", "bad-year9999"}
    assert all(dl.topic == cfg.topics.frames for dl in letters)
    assert stats["dead_lettered"] == 3 and stats["poll_errors"] == 0


def test_failing_model_gives_failsafe_rejects_then_recovers(
    app_config, produce, kafka_settings, redis_client, redis_prefix, serve_instance
):
    from inference.app import run

    frames = simulated_frames(cameras=2, per_camera=6, seed=32, defect_rate=0.0)
    cfg = app_config(partitions=2, standin={"batch_latency_ms": 5, "threshold": 2.0},  # would pass all
                     tuning={"max_batch_size": 4, "fault": "raise"})
    with running(cfg) as ingress:
        wait_assigned(ingress)
        produce(cfg.topics.frames, [encoded(f) for f in frames])
        ids = [f.frame_id for f in frames]
        got = wait_for(lambda: (r := results(redis_client, redis_prefix, ids)) and len(r) == len(ids) and r, 90,
                       "fail-safe results", state=lambda: ingress.stats.remote().result())
        assert all(r.failsafe == "model_failure" and r.decision and r.score is None for r in got.values())
        items = {f.item_id for f in frames}
        cmds = read_rejects(kafka_settings, cfg.topics.rejects, expected=len(items))
        assert sorted(c.item_id for c in cmds) == sorted(items)
        assert all(c.reason == "model_failure" for c in cmds)
        stats = wait_for(lambda: (s := ingress.stats.remote().result()).get("failsafe_model_failure") == len(frames)
                         and s, 30, "fail-safe counted", state=lambda: ingress.stats.remote().result())
        assert stats.get("dead_lettered", 0) == 0  # never "dead-letter and commit"
        # the model recovers (live reconfigure): new frames are inspected again and pass
        run(cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"fault": None})}))
        later = simulated_frames(cameras=2, per_camera=4, seed=33, defect_rate=0.0)
        produce(cfg.topics.frames, [encoded(f) for f in later])
        ids2 = [f.frame_id for f in later]
        got2 = wait_for(lambda: (r := results(redis_client, redis_prefix, ids2)) and len(r) == len(ids2) and r,
                        90, "inspected results after recovery")
        again = read_rejects(kafka_settings, cfg.topics.rejects, expected=len(items), settle_s=2.0)
    assert all(r.failsafe is None and not r.decision and r.score is not None for r in got2.values())
    assert len(again) == len(items)  # recovered frames pass: no new commands


def test_replays_and_redeliveries_never_actuate_again(
    app_config, produce, kafka_settings, redis_client, redis_prefix, serve_instance, topic_factory
):
    """Redelivered frames are not decided again; frames consumed from the replay topic never actuate
    (the topic decides, not the ``replay_of`` header); a frame on the live topic that carries a
    forged ``replay_of`` header is a live frame and its defective part is still rejected."""
    from ingest.contract import FrameMeta, encode_frame

    frames = simulated_frames(cameras=2, per_camera=15, seed=34)
    scores = standin_scores(frames)
    threshold = split_threshold(scores)
    defective = {f.item_id for f, s in zip(frames, scores, strict=True) if s >= threshold}
    assert defective
    now = datetime.now(UTC)
    frames = [dataclasses.replace(f, captured_at=now) for f in frames]
    cfg = app_config(partitions=2, standin={"batch_latency_ms": 5, "threshold": threshold},
                     tuning={"max_batch_size": 8})
    produce(cfg.topics.frames, [encoded(f, deadline_ms=3000) for f in frames])
    ids = [f.frame_id for f in frames]
    with running(cfg):
        first = wait_for(lambda: (r := results(redis_client, redis_prefix, ids)) and len(r) == len(ids) and r, 90,
                         "first decisions")
        read_rejects(kafka_settings, cfg.topics.rejects, expected=len(defective))

    def with_replay_of(f, frame_id: str, item_id: str, replay_of: str, deadline_ms: int | None = 3000):
        meta = FrameMeta.from_captured(f, "png", deadline_ms=deadline_ms).model_copy(
            update={"frame_id": frame_id, "item_id": item_id, "replay_of": replay_of})
        value, headers = encode_frame(f.image, meta)
        return f.camera_id.encode(), value, headers

    # the same records read again by a new group (a lost commit), long after their deadline
    again = cfg.model_copy(update={"ingress": cfg.ingress.model_copy(update={"group_id": cfg.ingress.group_id + "-2"})})
    with running(again) as ingress:
        wait_for(lambda: ingress.stats.remote().result().get("redelivered", 0) == len(ids), 60,
                 "redelivered frames skipped", state=lambda: ingress.stats.remote().result())
    # a replay of every frame on the replay topic, decided by its own app and group; to prove the
    # topic decides, the replays carry NEW item ids (a reject command would not be deduplicated)
    # and half of them no replay_of header at all
    replay_topic = topic_factory(2, "replay")
    rids = [f"{fid}@r1.0" for fid in ids]
    replays = []
    for i, (f, rid) in enumerate(zip(frames, rids, strict=True)):
        k, v, h = with_replay_of(f, rid, f"{f.item_id}-replayed", f.frame_id)
        replays.append((k, v, h if i % 2 else [(n, x) for n, x in h if n != "replay_of"]))
    produce(replay_topic, replays)
    replay_cfg = cfg.model_copy(update={
        "app_name": cfg.app_name + "-replay", "route_prefix": cfg.route_prefix + "-replay",
        "topics": cfg.topics.model_copy(update={"frames": replay_topic, "replay": replay_topic}),
        "ingress": cfg.ingress.model_copy(update={"group_id": cfg.ingress.group_id + "-replay"})})
    with running(replay_cfg) as ingress:
        wait_for(lambda: len(results(redis_client, f"{redis_prefix}:replay", rids)) == len(rids), 90,
                 "replay decisions", state=lambda: ingress.stats.remote().result())
        cmds = read_rejects(kafka_settings, cfg.topics.rejects, expected=len(defective), settle_s=3.0)
    assert sorted(c.item_id for c in cmds) == sorted(defective)  # nothing new
    assert results(redis_client, redis_prefix, ids) == first  # not decided again, not late
    replayed = results(redis_client, f"{redis_prefix}:replay", rids)
    assert all(r.replay_of is not None and not r.late for r in replayed.values())
    flagged = {f"{f.frame_id}@r1.0" for f, s in zip(frames, scores, strict=True) if s >= threshold}
    assert {rid for rid, r in replayed.items() if r.decision} == flagged  # decided, just not actuated
    assert not results(redis_client, redis_prefix, rids)  # never in the live namespace

    # forged: live frames (new items) carrying a replay_of header are live frames and actuate
    fids = [f"{fid}-forged" for fid in ids]
    with running(cfg):
        produce(cfg.topics.frames, [with_replay_of(dataclasses.replace(f, captured_at=datetime.now(UTC)), fid,
                                                   f"{f.item_id}-forged", f.frame_id, deadline_ms=None)
                                    for f, fid in zip(frames, fids, strict=True)])
        forged = wait_for(lambda: (r := results(redis_client, redis_prefix, fids)) and len(r) == len(fids) and r,
                          90, "forged frames decided live")
        cmds = read_rejects(kafka_settings, cfg.topics.rejects, expected=2 * len(defective), settle_s=3.0)
    assert sorted(c.item_id for c in cmds) == sorted(defective | {f"{i}-forged" for i in defective})
    assert all(r.replay_of is None and r.failsafe is None for r in forged.values())
