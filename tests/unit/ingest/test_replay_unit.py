"""Replay logic without a broker: header rewriting, ids, timing schedule, loops, invalid records."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from ingest.contract import FrameMeta, decode_meta, encode_frame
from ingest.errors import FrameError
from ingest.replay import MAX_ID, ReplayItem, replay, replay_frame_id, replay_headers

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def frame(fid="cam0-000001", **kw):
    m = FrameMeta(line_id="L1", camera_id="cam0", frame_id=fid, item_id="i1", captured_at=T0,
                  encoding="png", width=8, height=8, channels=1, recipe="vials", **kw)
    return encode_frame(np.zeros((8, 8), np.uint8), m)


class RecordingPublisher:
    """Stands in for FramePublisher: records what would be sent and when."""

    def __init__(self):
        self.sent = []

    def send(self, value, headers, *, key, frame_id, line_id, camera_id, topic=None, timestamp_ms=None):
        self.sent.append((time.monotonic(), frame_id, value, headers, key))


def test_replay_headers_rewrite_id_add_link_and_drop_the_deadline():
    value, headers = frame(deadline_ms=100)
    new, new_id, line, camera = replay_headers(headers + [("traceparent", b"x")], "abcd1234", 0)
    assert new_id == "cam0-000001@abcd1234.0" and (line, camera) == ("L1", "cam0")
    meta = decode_meta(new)
    assert meta.frame_id == new_id and meta.replay_of == "cam0-000001"
    assert meta.deadline_ms is None  # an old capture time + the original deadline = late
    assert meta.model_dump(exclude={"frame_id", "replay_of", "deadline_ms"}) == decode_meta(headers).model_dump(
        exclude={"frame_id", "replay_of", "deadline_ms"})
    assert ("traceparent", b"x") in new


def test_keep_deadline_keeps_it_and_retime_rebases_it():
    _, headers = frame(deadline_ms=100)
    new, *_ = replay_headers(headers, "r", 0, keep_deadline=True)
    assert decode_meta(new).deadline_ms == 100 and decode_meta(new).captured_at == T0
    new, *_ = replay_headers(headers, "r", 0, keep_deadline=True, retime=True)
    meta = decode_meta(new)
    assert meta.deadline_ms == 100
    assert (datetime.now(UTC) - meta.captured_at).total_seconds() < 5  # deadline = replay time + 100 ms


def test_replayed_frames_decode_although_their_capture_time_is_old():
    from ingest.contract import decode_frame

    value, headers = frame(deadline_ms=100)
    with pytest.raises(FrameError, match="older than the line's clock"):
        decode_frame(value, headers)  # T0 is days ago
    new, *_ = replay_headers(headers, "r", 0)
    meta, _ = decode_frame(value, new)
    assert meta.replay_of == "cam0-000001" and meta.captured_at == T0


def test_replay_of_a_replay_links_to_the_root():
    _, headers = frame(fid="cam0-1@aaaa.0", replay_of="cam0-1")
    new, new_id, _, _ = replay_headers(headers, "bbbb", 2)
    assert decode_meta(new).replay_of == "cam0-1" and new_id == "cam0-1@bbbb.2"
    assert sum(1 for k, _ in new if k == "replay_of") == 1


def test_retime_stamps_now():
    _, headers = frame()
    new, *_ = replay_headers(headers, "r", 0, retime=True)
    assert (datetime.now(UTC) - decode_meta(new).captured_at).total_seconds() < 5


def test_long_ids_stay_valid():
    long = "c" * MAX_ID
    new = replay_frame_id(long, "abcd1234", 12)
    assert len(new) <= MAX_ID and new.endswith("@abcd1234.12")
    _, headers = frame(fid=long)
    decode_meta(replay_headers(headers, "abcd1234", 12)[0])  # still a valid frame


def test_invalid_headers_raise():
    with pytest.raises(FrameError):
        replay_headers([("frame_id", b"x")], "r", 0)


def items(n=5, gap_ms=60):
    out = []
    for i in range(n):
        value, headers = frame(fid=f"cam0-{i:06d}")
        out.append(ReplayItem(b"cam0", value, headers, 1_000_000 + i * gap_ms))
    return lambda: iter(out)


# Timing on a busy 2-core machine: the schedule is absolute (t0 + offset / speed), so a frame is
# never sent early (checked tightly: 5 ms for timer granularity) and a loaded machine only makes it
# late (checked loosely: a late frame does not shift the rest of the schedule, so lateness stays
# bounded by one scheduling hiccup, not accumulated).
EARLY_S = 0.005
LATE_S = 0.30


def test_speed_one_follows_original_timing():
    pub = RecordingPublisher()
    stats = replay(items(6, 60), pub, speed=1.0, run="r1")
    assert stats.frames == 6 and stats.loops == 1
    t = [s[0] - pub.sent[0][0] for s in pub.sent]
    for i, ti in enumerate(t):
        assert i * 0.060 - EARLY_S <= ti <= i * 0.060 + LATE_S, t


def test_speed_scales_and_max_does_not_wait():
    pub = RecordingPublisher()
    replay(items(6, 400), pub, speed=4.0)  # 2 s of original timing -> 0.5 s
    span = pub.sent[-1][0] - pub.sent[0][0]
    assert 0.5 - EARLY_S <= span <= 0.5 + LATE_S, span
    pub = RecordingPublisher()
    start = time.monotonic()
    replay(items(6, 1000), pub, speed=None)  # 5 s of original timing, not waited for
    assert time.monotonic() - start < 2.0


def test_loop_gives_new_ids_each_pass_and_stop_ends_it():
    pub = RecordingPublisher()
    stats = replay(items(3, 0), pub, speed=None, loop=True, max_loops=3, run="zz")
    assert stats.loops == 3 and stats.frames == 9
    ids = [s[1] for s in pub.sent]
    assert len(set(ids)) == 9 and ids[3] == "cam0-000000@zz.1"
    stop = threading.Event()
    stop.set()
    assert replay(items(3, 0), RecordingPublisher(), speed=None, loop=True, stop=stop).frames == 0


def test_invalid_record_is_replayed_verbatim_and_counted():
    good_v, good_h = frame()
    bad = ReplayItem(b"cam0", b"junk", [("frame_id", b"broken")], 1_000_000)
    good = ReplayItem(b"cam0", good_v, good_h, 1_000_010)
    pub = RecordingPublisher()
    stats = replay(lambda: iter([bad, good]), pub, speed=None)
    assert stats.frames == 2 and stats.invalid == 1
    assert pub.sent[0][2] == b"junk" and pub.sent[0][3] == [("frame_id", b"broken")]


def test_bad_speed():
    with pytest.raises(ValueError):
        replay(items(), RecordingPublisher(), speed=0)


def test_cli_replays_to_the_replay_topic_by_default_and_refuses_the_live_one(tmp_path):
    import argparse

    from ingest.cli import register
    from ingest.topics import FRAMES, FRAMES_REPLAY

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["replay", str(tmp_path)])
    assert args.topic == FRAMES_REPLAY and not args.to_live and not args.keep_deadline
    args = parser.parse_args(["replay", str(tmp_path), "--topic", FRAMES])
    with pytest.raises(SystemExit, match="--to-live"):
        args.func(args)  # refused before any connection
    assert parser.parse_args(["replay", str(tmp_path), "--topic", FRAMES, "--to-live"]).to_live


def test_replay_topic_is_created_by_grdline_topics():
    from ingest.topics import DEFAULT_TOPICS, FRAMES, FRAMES_REPLAY

    specs = {s.name: s for s in DEFAULT_TOPICS}
    assert FRAMES_REPLAY in specs and FRAMES_REPLAY != FRAMES
    assert specs[FRAMES_REPLAY].partitions == specs[FRAMES].partitions
