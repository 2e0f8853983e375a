"""``captured_at`` at the edges of time, clock skew bounds, and header sets that are odd in every
way a record can be: each ends in a FrameError subclass naming the field, never anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from ingest.contract import (
    MAX_HEADERS,
    FrameMeta,
    check_capture_time,
    decode_frame,
    decode_meta,
    encode_frame,
)
from ingest.errors import (
    ClockSkewError,
    FrameError,
    InvalidHeaderError,
    MissingHeaderError,
    SizeLimitError,
    UndecodableImageError,
    UnknownSchemaVersionError,
    UnsupportedEncodingError,
)
from ingest.settings import ClockSettings
from ingest.topics import FRAMES_RETENTION_MS

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def good(captured_at: datetime = NOW - timedelta(milliseconds=40), **kw):
    m = FrameMeta(line_id="L1", camera_id="cam0", frame_id="f-1", item_id="i-1", captured_at=captured_at,
                  encoding="png", width=16, height=8, channels=1, recipe="vials", **kw)
    return encode_frame(np.zeros((8, 16), np.uint8), m)


def with_header(headers, name, value: bytes):
    return [(k, value if k == name else v) for k, v in headers]


# --------------------------------------------------------------------------- edges of time
@pytest.mark.parametrize("text", [
    b"0001-01-01T00:00:00+05:00",       # exists with its offset, before year 1 in UTC
    b"9999-12-31T23:59:59.9-05:00",     # after year 9999 in UTC
    b"0001-01-01T00:00:00.000001+23:59",
])
def test_time_outside_utc_range_is_an_invalid_header_not_an_overflow(text):
    value, headers = good()
    with pytest.raises(InvalidHeaderError) as ei:
        decode_frame(value, with_header(headers, "captured_at", text), now=NOW)
    assert ei.value.field == "captured_at"
    assert "outside the range" in ei.value.reason
    with pytest.raises(InvalidHeaderError):  # decode_meta alone too (recorders, replayers)
        decode_meta(with_header(headers, "captured_at", text))


@pytest.mark.parametrize("text", [b"0001-01-01T00:00:00+00:00", b"1970-01-01T00:00:00+00:00",
                                  b"2000-01-01T00:00:00+00:00"])
def test_representable_but_ancient_time_is_clock_skew(text):
    value, headers = good()
    with pytest.raises(ClockSkewError) as ei:
        decode_frame(value, with_header(headers, "captured_at", text), now=NOW)
    assert ei.value.field == "captured_at" and "older than the line's clock" in ei.value.reason
    assert isinstance(ei.value, InvalidHeaderError)
    decode_meta(with_header(headers, "captured_at", text))  # reading the headers is still fine


@pytest.mark.parametrize("text", [b"9999-12-31T23:59:59.9+00:00", b"9999-12-31T23:59:59.999999+00:00",
                                  b"2027-01-01T00:00:00+00:00"])
def test_far_future_time_is_clock_skew(text):
    value, headers = good()
    with pytest.raises(ClockSkewError) as ei:
        decode_frame(value, with_header(headers, "captured_at", text), now=NOW)
    assert ei.value.field == "captured_at" and "ahead of the line's clock" in ei.value.reason


def test_model_construction_outside_utc_range_is_a_validation_error():
    from datetime import timezone

    with pytest.raises(ValidationError):
        FrameMeta(line_id="L1", camera_id="c", frame_id="f", item_id="i", encoding="png", width=1, height=1,
                  channels=1, recipe="r", captured_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))


# --------------------------------------------------------------------------- clock skew bounds
def test_default_bounds_have_one_home():
    clock = ClockSettings()
    assert clock.max_future_ms == 2_000
    assert clock.max_age_s == FRAMES_RETENTION_MS / 1000


def test_bounds_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRDLINE_CLOCK_MAX_FUTURE_MS", "50")
    monkeypatch.setenv("GRDLINE_CLOCK_MAX_AGE_S", "10")
    clock = ClockSettings()
    assert (clock.max_future_ms, clock.max_age_s) == (50, 10.0)


@pytest.mark.parametrize("offset_ms,ok", [
    (1_999, True), (2_001, False),                       # ahead of the line
    (-(86_400_000 - 1_000), True), (-(86_400_000 + 1_000), False),  # behind the line
    (0, True),
])
def test_skew_edges(offset_ms, ok):
    value, headers = good(captured_at=NOW + timedelta(milliseconds=offset_ms))
    if ok:
        meta, _ = decode_frame(value, headers, now=NOW)
        assert meta.captured_at == NOW + timedelta(milliseconds=offset_ms)  # never clamped
    else:
        with pytest.raises(ClockSkewError):
            decode_frame(value, headers, now=NOW)


def test_custom_bounds_apply():
    clock = ClockSettings(max_future_ms=0, max_age_s=1)
    value, headers = good(captured_at=NOW + timedelta(milliseconds=1))
    with pytest.raises(ClockSkewError, match="tolerance 0 ms"):
        decode_frame(value, headers, now=NOW, clock=clock)
    value, headers = good(captured_at=NOW - timedelta(seconds=2))
    with pytest.raises(ClockSkewError, match="oldest accepted is 1 s"):
        decode_frame(value, headers, now=NOW, clock=clock)


def test_replayed_frames_are_exempt_from_the_age_bound_only():
    old = NOW - timedelta(days=30)
    value, headers = good(captured_at=old, replay_of="f-0")
    meta, _ = decode_frame(value, headers, now=NOW)
    assert meta.replay_of == "f-0" and meta.captured_at == old
    value, headers = good(captured_at=NOW + timedelta(hours=1), replay_of="f-0")
    with pytest.raises(ClockSkewError):
        decode_frame(value, headers, now=NOW)


def test_check_clock_false_reads_old_frames():
    value, headers = good(captured_at=NOW - timedelta(days=30))
    decode_frame(value, headers, now=NOW, check_clock=False)
    meta = decode_meta(headers)
    with pytest.raises(ClockSkewError):
        check_capture_time(meta, now=NOW)


def test_default_now_is_the_wall_clock():
    value, headers = good(captured_at=datetime.now(UTC))
    decode_frame(value, headers)


# --------------------------------------------------------------------------- header set oddities
def _raises_frame_error(value, headers, field=None, kind=FrameError):
    with pytest.raises(kind) as ei:
        decode_frame(value, headers, now=NOW)
    assert type(ei.value).__module__ == "ingest.errors"
    if field is not None:
        assert ei.value.field == field
    return ei.value


def test_header_oddities_each_raise_a_frame_error():
    value, headers = good()
    _raises_frame_error(value, [], "schema_version", MissingHeaderError)
    _raises_frame_error(value, [(k, v) for k, v in headers if k != "item_id"], "item_id", MissingHeaderError)
    _raises_frame_error(value, headers + [("item_id", b"i-2")], "item_id", InvalidHeaderError)
    _raises_frame_error(value, with_header(headers, "camera_id", b"\xff\xfecam"), "camera_id", InvalidHeaderError)
    _raises_frame_error(value, with_header(headers, "schema_version", b"2"), "schema_version",
                        UnknownSchemaVersionError)
    _raises_frame_error(value, with_header(headers, "encoding", b"webp"), "encoding", UnsupportedEncodingError)
    _raises_frame_error(value, with_header(headers, "recipe", b"r" * 4096), "recipe", InvalidHeaderError)
    _raises_frame_error(value, headers + [(f"trace-{i}", b"x") for i in range(MAX_HEADERS)], "headers",
                        SizeLimitError)
    _raises_frame_error(value, with_header(headers, "frame_id", None), "frame_id", InvalidHeaderError)
    _raises_frame_error(value, with_header(headers, "frame_id", "text"), "frame_id", InvalidHeaderError)


@pytest.mark.parametrize("bad_headers", [
    b"frame_id=f",                           # not a list at all
    "frame_id",
    {"frame_id": b"f"},
    [("frame_id",)],                         # not a pair
    [("frame_id", b"f", b"x")],
    [None],
    [(1, b"x")],                             # key not text
    [(None, b"x")],
    42,
])
def test_headers_that_are_not_pairs_of_text_and_bytes(bad_headers):
    value, _ = good()
    _raises_frame_error(value, bad_headers, None)


def test_non_utf8_header_keys():
    """kafka-python raises inside poll() on a header key that is not UTF-8 (so the consumer has to
    skip the record and dead-letter a stub). If such a key reaches decode_frame anyway, as bytes or
    as a str carrying lone surrogates (``errors="surrogateescape"``), it is an InvalidHeaderError on
    field ``headers`` that shows the key; a bytes key that *is* UTF-8 is read as its text."""
    value, headers = good()
    err = _raises_frame_error(value, headers + [(b"\xffbad", b"x")], "headers", InvalidHeaderError)
    assert "not UTF-8" in err.reason and "\\xffbad" in err.reason
    surrogate = b"\xffbad".decode("utf-8", "surrogateescape")
    err = _raises_frame_error(value, headers + [(surrogate, b"x")], "headers", InvalidHeaderError)
    assert "not UTF-8" in err.reason
    as_bytes = [(k.encode(), v) for k, v in headers]
    meta, _ = decode_frame(value, as_bytes, now=NOW)
    assert meta.frame_id == "f-1"
    _raises_frame_error(value, as_bytes + [(b"frame_id", b"f-2")], "frame_id", InvalidHeaderError)


@pytest.mark.parametrize("bad_value", ["text", 7, bytearray(), memoryview(b"")])
def test_value_of_the_wrong_type_or_empty(bad_value):
    _, headers = good()
    _raises_frame_error(bad_value, headers, "value", UndecodableImageError)


def test_bytearray_and_memoryview_values_decode():
    value, headers = good()
    for v in (bytearray(value), memoryview(value)):
        meta, img = decode_frame(v, headers, now=NOW)
        assert img.shape == (8, 16)
