"""Record a topic range into an archive, replay it: same bytes and metadata, replay header and new
ids, original timing at speed 1.0, as fast as possible at --speed max; topic-to-topic replay."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from ingest.archive import ArchiveReader
from ingest.camera import run_cameras
from ingest.contract import decode_frame, decode_meta
from ingest.errors import ArchiveError
from ingest.kafka_range import parse_time
from ingest.producer import FramePublisher
from ingest.recorder import record
from ingest.replay import archive_items, replay, topic_items

FPS = 20.0
PER_CAMERA = 30  # 1.5 s per camera at 20 fps, two cameras in parallel
#: Replay timing margin: one scheduling hiccup of a busy 2-core machine (the replay schedule is
#: absolute, so lateness does not accumulate); a wrong speed moves frames by far more (>= 750 ms).
TIMING_MS = 400


def _publish_paced(kafka_settings, topic, list_source, per_camera=PER_CAMERA, fps=FPS):
    from tests.integration.ingest.conftest import spread_cameras

    sources = [list_source(cam, per_camera, size=32, seed=c) for c, cam in enumerate(spread_cameras(2, 2))]
    with FramePublisher(kafka_settings, topic) as pub:
        run_cameras(sources, pub, encoding="png", fps=fps, stop=threading.Event())
    assert pub.failed == 0 and pub.acked == 2 * per_camera


def _strip(headers, *names):
    return [(k, v) for k, v in headers if k not in names]


@pytest.fixture
def recorded(kafka_settings, topic_factory, list_source, tmp_path):
    """A short paced recording: (source topic, archive path, source records by frame id)."""
    src = topic_factory(partitions=2, suffix="src")
    t1 = datetime.now(UTC) - timedelta(seconds=1)
    _publish_paced(kafka_settings, src, list_source)
    t2 = datetime.now(UTC) + timedelta(seconds=1)
    out = tmp_path / "rec"
    summary = record(src, out, settings=kafka_settings, start_time=t1, end_time=t2, progress=False)
    assert summary.frames == 2 * PER_CAMERA
    return src, out


def test_archive_holds_every_record_with_checksums(recorded, read_topic):
    src, out = recorded
    originals = {(r.partition, r.offset): r for r in read_topic(src, 2 * PER_CAMERA)}
    reader = ArchiveReader(out)
    assert reader.info["complete"] and reader.info["frames"] == 2 * PER_CAMERA
    stamps = []
    for entry, value in reader:
        rec = originals[(entry.partition, entry.offset)]
        assert value == rec.value and entry.headers == rec.headers and entry.key == rec.key
        assert entry.timestamp_ms == rec.timestamp
        stamps.append(entry.timestamp_ms)
    assert stamps == sorted(stamps)  # manifest in replay (timestamp) order
    # corrupting a file is detected
    first = reader.entries()[0]
    (out / first.file).write_bytes(b"tampered")
    with pytest.raises(ArchiveError, match="sha256"):
        ArchiveReader(out).read(first)


def test_replay_speed_one_keeps_bytes_metadata_and_timing(recorded, kafka_settings, topic_factory, read_topic):
    src, out = recorded
    dst = topic_factory(partitions=2, suffix="dst")
    entries = ArchiveReader(out).entries()
    with FramePublisher(kafka_settings, dst) as pub:
        stats = replay(archive_items(out), pub, speed=1.0)
    assert stats.frames == len(entries) and stats.invalid == 0 and pub.failed == 0

    replayed = read_topic(dst, len(entries))
    assert len(replayed) == len(entries)
    by_original = {decode_meta(r.headers).replay_of: r for r in replayed}
    ids = set()
    for entry, value in ArchiveReader(out):
        orig_meta = decode_meta(entry.headers)
        rec = by_original[orig_meta.frame_id]
        meta, _ = decode_frame(rec.value, rec.headers)
        assert rec.value == value and rec.key == entry.key  # bytes identical
        assert meta.replay_of == orig_meta.frame_id and meta.frame_id != orig_meta.frame_id
        assert meta.frame_id.startswith(orig_meta.frame_id + "@")
        assert meta.model_dump(exclude={"frame_id", "replay_of"}) == orig_meta.model_dump(
            exclude={"frame_id", "replay_of"})  # metadata identical
        assert _strip(rec.headers, "frame_id", "replay_of") == _strip(entry.headers, "frame_id")
        ids.add(meta.frame_id)
    assert len(ids) == len(entries)
    # per-camera order kept
    for cam in {r.key.decode() for r in replayed}:
        seq = [int(decode_meta(r.headers).replay_of.rsplit("-", 1)[1])
               for r in sorted(replayed, key=lambda r: (r.partition, r.offset))
               if r.key == cam.encode()]
        assert seq == sorted(seq) and len(seq) == PER_CAMERA
    # timing (broker timestamps of the replayed records): the schedule is absolute, so a busy
    # 2-core machine makes single frames late without shifting the rest: every frame's lag behind
    # the original timing lies within one hiccup (TIMING_MS) of every other's, and so does the span
    orig_span = entries[-1].timestamp_ms - entries[0].timestamp_ms
    stamps = sorted(r.timestamp for r in replayed)
    replay_span = stamps[-1] - stamps[0]
    assert orig_span > 1000
    assert abs(replay_span - orig_span) <= TIMING_MS, (replay_span, orig_span)
    lags = [by_original[decode_meta(e.headers).frame_id].timestamp - e.timestamp_ms for e in entries]
    assert max(lags) - min(lags) <= TIMING_MS, (min(lags), max(lags))


def test_replay_speed_max_is_not_paced(recorded, kafka_settings, topic_factory, read_topic):
    src, out = recorded
    dst = topic_factory(partitions=2, suffix="max")
    entries = ArchiveReader(out).entries()
    orig_span_s = (entries[-1].timestamp_ms - entries[0].timestamp_ms) / 1000
    with FramePublisher(kafka_settings, dst) as pub:
        t = time.monotonic()
        stats = replay(archive_items(out), pub, speed=None, loop=True, max_loops=3)
        pub.flush()
        elapsed = time.monotonic() - t
    assert stats.frames == 3 * len(entries) and stats.loops == 3 and pub.failed == 0
    # paced, 3 passes would take 3 x the span; unpaced on a busy machine, well under half of that
    assert elapsed < 3 * orig_span_s / 2, f"max speed took {elapsed:.2f}s for 3 passes of a {orig_span_s:.2f}s recording"
    replayed = read_topic(dst, 3 * len(entries))
    ids = [decode_meta(r.headers).frame_id for r in replayed]
    assert len(ids) == len(set(ids)) == 3 * len(entries)  # every loop gets new ids


def test_replay_double_speed_halves_the_span(recorded, kafka_settings, topic_factory, read_topic):
    src, out = recorded
    dst = topic_factory(partitions=1, suffix="x2")
    entries = ArchiveReader(out).entries()
    with FramePublisher(kafka_settings, dst) as pub:
        replay(archive_items(out), pub, speed=2.0)
    stamps = sorted(r.timestamp for r in read_topic(dst, len(entries)))
    orig_span = entries[-1].timestamp_ms - entries[0].timestamp_ms
    assert abs((stamps[-1] - stamps[0]) - orig_span / 2) <= TIMING_MS, (stamps[-1] - stamps[0], orig_span)


def test_offset_range_tar_archive_and_topic_to_topic_replay(kafka_settings, topic_factory, list_source,
                                                            read_topic, tmp_path):
    src = topic_factory(partitions=2, suffix="src")
    _publish_paced(kafka_settings, src, list_source, per_camera=20, fps=200.0)
    # offsets 5..15 of each partition into a tar archive
    tar = tmp_path / "part.tar"
    summary = record(src, tar, settings=kafka_settings, start_offsets=5, end_offsets=15, progress=False)
    assert summary.frames == 20
    reader = ArchiveReader(tar)
    assert sorted({e.offset for e in reader.entries()}) == list(range(5, 15))
    assert all(v for _, v in reader)
    reader.close()

    # topic -> topic, no archive: the whole source topic replayed at max speed with new ids
    dst = topic_factory(partitions=2, suffix="t2t")
    with FramePublisher(kafka_settings, dst) as pub:
        stats = replay(topic_items(kafka_settings, src, start_time=parse_time("-10m")), pub, speed=None)
    assert stats.frames == 40
    originals = {decode_meta(r.headers).frame_id: r for r in read_topic(src, 40)}
    copies = read_topic(dst, 40)
    assert len(copies) == 40
    for rec in copies:
        meta = decode_meta(rec.headers)
        assert rec.value == originals[meta.replay_of].value


def test_cli_record_and_replay(kafka_settings, topic_factory, list_source, read_topic, tmp_path, capsys):
    from inference.cli import main

    src = topic_factory(partitions=1, suffix="src")
    _publish_paced(kafka_settings, src, list_source, per_camera=5, fps=100.0)
    out = tmp_path / "cli-rec"
    assert main(["record", "--topic", src, "--from=-5m", "--to", "now", "--out", str(out),
                 "--no-progress"]) == 0
    assert "recorded 10 frames" in capsys.readouterr().out
    dst = topic_factory(partitions=1, suffix="dst")
    assert main(["replay", str(out), "--topic", dst, "--speed", "max"]) == 0
    assert "replayed 10 frames" in capsys.readouterr().out
    copies = read_topic(dst, 10)
    assert len(copies) == 10 and all(decode_meta(r.headers).replay_of for r in copies)
