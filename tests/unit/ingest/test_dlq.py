"""Dead-letter format: lossless round trip of the original record, typed errors for non-letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ingest.contract import FrameMeta, encode_frame
from ingest.dlq import (
    DLQ_HEADERS,
    MAX_REASON_CHARS,
    STAGE_DECODE,
    parse_dead_letter,
    to_dead_letter,
)
from ingest.errors import DeadLetterError, MissingHeaderError

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def test_round_trip_keeps_original_bytes_and_headers():
    original = [("frame_id", b"cam0-1"), ("width", b"\xff\x00garbage"), ("frame_id", b"dup")]
    value, headers = to_dead_letter(b"\x00\x01raw", original, "width: not an int", STAGE_DECODE,
                                    "frames", 3, 1234, failed_at=T0)
    assert value == b"\x00\x01raw"
    assert headers[: len(original)] == original
    assert [k for k, _ in headers[len(original):]] == list(DLQ_HEADERS)
    dl = parse_dead_letter(value, headers, key=b"cam0", dlq_partition=0, dlq_offset=7)
    assert dl.value == b"\x00\x01raw" and dl.headers == original and dl.key == b"cam0"
    assert (dl.reason, dl.stage, dl.topic, dl.partition, dl.offset) == (
        "width: not an int", "decode", "frames", 3, 1234)
    assert dl.failed_at == T0 and (dl.dlq_partition, dl.dlq_offset) == (0, 7)
    assert dl.frame_id == "cam0-1"


def test_error_fills_type_and_field():
    err = MissingHeaderError("camera_id", "header missing")
    value, headers = to_dead_letter(b"v", [], str(err), STAGE_DECODE, "frames", 0, 0, error=err)
    dl = parse_dead_letter(value, headers)
    assert (dl.error_type, dl.field, dl.reason) == ("MissingHeaderError", "camera_id", "camera_id: header missing")


def test_none_value_and_unknown_position():
    value, headers = to_dead_letter(None, None, "no value", "ingress", "frames", None, None)
    dl = parse_dead_letter(value, headers)
    assert dl.value == b"" and dl.headers == [] and (dl.partition, dl.offset) == (-1, -1)


def test_dead_letter_of_a_dead_letter_keeps_the_inner_one_intact():
    v1, h1 = to_dead_letter(b"img", [("frame_id", b"f1")], "first", "decode", "frames", 0, 1, failed_at=T0)
    v2, h2 = to_dead_letter(v1, h1, "second", "sink", "frames.replay", 1, 2, failed_at=T0)
    outer = parse_dead_letter(v2, h2)
    assert outer.reason == "second" and outer.headers == h1
    inner = parse_dead_letter(outer.value, outer.headers)
    assert inner.reason == "first" and inner.headers == [("frame_id", b"f1")]


def test_long_reason_is_truncated_and_time_is_utc():
    cet = timezone(timedelta(hours=1))
    value, headers = to_dead_letter(b"", [], "x" * 10_000, "decode", "frames", 0, 0,
                                    failed_at=datetime(2026, 11, 30, 8, 0, tzinfo=cet))
    dl = parse_dead_letter(value, headers)
    assert len(dl.reason) == MAX_REASON_CHARS and dl.failed_at == T0


def test_real_frame_survives_dead_lettering():
    import numpy as np

    m = FrameMeta(line_id="L1", camera_id="cam0", frame_id="f1", item_id="i1", captured_at=T0,
                  encoding="png", width=8, height=8, channels=1, recipe="vials")
    value, headers = encode_frame(np.zeros((8, 8), np.uint8), m)
    dv, dh = to_dead_letter(value, headers, "model failed", "inference", "frames", 0, 5)
    dl = parse_dead_letter(dv, dh)
    assert dl.value == value and dl.headers == headers


@pytest.mark.parametrize("headers", [
    [],
    [("frame_id", b"f1")],
    [(k, b"x") for k in reversed(DLQ_HEADERS)],
])
def test_not_a_dead_letter(headers):
    with pytest.raises(DeadLetterError):
        parse_dead_letter(b"v", headers, dlq_partition=0, dlq_offset=3)


@pytest.mark.parametrize("key,bad", [
    ("dlq.partition", b"three"), ("dlq.failed_at", b"now"), ("dlq.schema_version", b"9"),
    ("dlq.stage", b"has space"), ("dlq.reason", b"\xff"),
])
def test_malformed_dead_letter_fields(key, bad):
    value, headers = to_dead_letter(b"v", [], "r", "decode", "frames", 0, 0)
    headers = [(k, bad if k == key else v) for k, v in headers]
    with pytest.raises(DeadLetterError) as ei:
        parse_dead_letter(value, headers, dlq_partition=0, dlq_offset=3)
    assert "offset 3" in str(ei.value)
