"""Bad input through the real broker: each kind raises its typed error at the consumer and becomes a
dead letter with the original bytes; an oversize frame is reported with its id, never lost."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from ingest.contract import FrameMeta, decode_frame, encode_frame
from ingest.dlq import read_dead_letters, to_dead_letter
from ingest.errors import (
    FrameError,
    MissingHeaderError,
    SizeMismatchError,
    UndecodableImageError,
    UnsupportedEncodingError,
)
from ingest.producer import FramePublisher
from ingest.topics import MAX_MESSAGE_BYTES


def _meta(frame_id: str, **kw) -> FrameMeta:
    base = dict(line_id="L1", camera_id="cam0", frame_id=frame_id, item_id="i-" + frame_id,
                captured_at=datetime.now(UTC), encoding="png", width=32, height=32, channels=1,
                recipe="vials")
    return FrameMeta(**{**base, **kw})


def _replace(headers, name, value):
    return [(k, value if k == name else v) for k, v in headers]


def test_bad_frames_raise_typed_errors_and_become_dead_letters(kafka_settings, topic_factory, read_topic):
    topic = topic_factory(partitions=1, suffix="frames")
    dlq = topic_factory(partitions=1, suffix="dlq")
    img = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    good_v, good_h = encode_frame(img, _meta("good"))
    cases = {
        "good": (good_v, good_h, None),
        "corrupt": (good_v[:40] + b"\x00" * (len(good_v) - 40), encode_frame(img, _meta("corrupt"))[1],
                    UndecodableImageError),
        "missing": (good_v, [(k, v) for k, v in encode_frame(img, _meta("missing"))[1] if k != "width"],
                    MissingHeaderError),
        "size": (good_v, _replace(encode_frame(img, _meta("size"))[1], "height", b"31"), SizeMismatchError),
        "rawsize": (b"\x00" * 1000, encode_frame(img, _meta("rawsize", encoding="raw", dtype="uint8"))[1],
                    SizeMismatchError),
        "encoding": (good_v, _replace(encode_frame(img, _meta("encoding"))[1], "encoding", b"webp"),
                     UnsupportedEncodingError),
    }
    with FramePublisher(kafka_settings, topic) as pub:
        for fid, (value, headers, _) in cases.items():
            pub.send(value, headers, key=b"cam0", frame_id=fid, line_id="L1", camera_id="cam0")
    assert pub.acked == len(cases) and pub.failed == 0

    records = read_topic(topic, len(cases))
    assert len(records) == len(cases)
    with FramePublisher(kafka_settings, dlq) as dead:
        for rec in records:
            fid = dict(rec.headers)["frame_id"].decode()
            expected = cases[fid][2]
            if expected is None:
                meta, image = decode_frame(rec.value, rec.headers)
                np.testing.assert_array_equal(image, img)
                continue
            with pytest.raises(expected) as ei:
                decode_frame(rec.value, rec.headers)
            err = ei.value
            assert isinstance(err, FrameError) and err.field
            value, headers = to_dead_letter(rec.value, rec.headers, str(err), "decode", rec.topic,
                                            rec.partition, rec.offset, error=err)
            dead.send(value, headers, key=rec.key, frame_id=fid, line_id="L1", camera_id="cam0")
    assert dead.failed == 0

    letters = list(read_dead_letters(kafka_settings, dlq, timeout_s=30))
    assert {dl.frame_id for dl in letters} == set(cases) - {"good"}
    by_offset = {r.offset: r for r in records}
    for dl in letters:
        original = by_offset[dl.offset]
        assert dl.value == original.value and dl.headers == original.headers
        assert dl.topic == topic and dl.partition == 0 and dl.stage == "decode"
        assert dl.error_type == cases[dl.frame_id][2].__name__
    fields = {dl.frame_id: dl.field for dl in letters}
    assert fields == {"corrupt": "value", "missing": "width", "size": "height", "rawsize": "value",
                      "encoding": "encoding"}


def test_oversize_frames_are_reported_not_lost(kafka_settings, topic_factory, read_topic):
    """Two ways to be too large: over the producer's max_request_size (refused at send), and over
    the topic's max.message.bytes (refused by the broker). Both are reported with the frame id; the
    frames around them are delivered."""
    small_topic = topic_factory(partitions=1, suffix="small", **{"max.message.bytes": "65536"})
    failures = []
    big = np.random.default_rng(1).integers(0, 256, (3000, 3000), dtype=np.uint8)  # 9 MB raw
    mid = np.random.default_rng(2).integers(0, 256, (300, 300), dtype=np.uint8)    # 90 KB raw
    ok = np.zeros((32, 32), np.uint8)
    assert big.nbytes > MAX_MESSAGE_BYTES
    with FramePublisher(kafka_settings, small_topic, on_failure=failures.append) as pub:
        pub.publish(ok, _meta("before", encoding="raw", dtype="uint8"))
        pub.publish(big, _meta("too-big-for-client", encoding="raw", dtype="uint8", width=3000, height=3000))
        pub.publish(mid, _meta("too-big-for-topic", encoding="raw", dtype="uint8", width=300, height=300))
        pub.publish(ok, _meta("after", encoding="raw", dtype="uint8"))
        pub.flush(timeout=60)
    assert pub.sent == 4 and pub.acked == 2 and pub.failed == 2
    reported = {f.frame_id: f.reason for f in failures}
    assert set(reported) == {"too-big-for-client", "too-big-for-topic"}
    assert all("TooLarge" in r for r in reported.values()), reported
    assert [f.frame_id for f in pub.failures] == [f.frame_id for f in failures]
    delivered = read_topic(small_topic, 2)
    assert [dict(r.headers)["frame_id"] for r in delivered] == [b"before", b"after"]


def test_publisher_recovers_from_a_fatal_broker_error(kafka_settings, topic_factory, read_topic):
    """A record the broker refuses on a topic whose limit the publisher does not know: kafka-python's
    idempotent producer turns that into a fatal state. The frame is reported; the publisher replaces
    the producer and the next frames are delivered."""
    main = topic_factory(partitions=1, suffix="main")
    small = topic_factory(partitions=1, suffix="small", **{"max.message.bytes": "65536"})
    failures = []
    mid = np.random.default_rng(2).integers(0, 256, (300, 300), dtype=np.uint8)
    ok = np.zeros((32, 32), np.uint8)
    with FramePublisher(kafka_settings, main, on_failure=failures.append) as pub:
        meta = _meta("refused", encoding="raw", dtype="uint8", width=300, height=300)
        value, headers = encode_frame(mid, meta)
        pub.send(value, headers, key=b"cam0", frame_id="refused", line_id="L1", camera_id="cam0", topic=small)
        pub.flush(timeout=30)
        assert pub.failed == 1
        for i in range(5):
            pub.publish(ok, _meta(f"after-{i}", encoding="raw", dtype="uint8"))
        pub.flush(timeout=30)
    assert [f.frame_id for f in failures] == ["refused"] and "TooLarge" in failures[0].reason
    assert pub.recoveries == 1 and pub.acked == 5
    assert [dict(r.headers)["frame_id"] for r in read_topic(main, 5)] == [f"after-{i}".encode() for i in range(5)]
