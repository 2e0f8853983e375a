"""Property: whatever is done to a valid frame's headers and bytes, ``decode_frame`` either decodes
it (an array of the declared shape) or raises the contract's own error type (a FrameError subclass
from ``ingest.errors``). Nothing else — no OverflowError, UnicodeError, struct.error, cv2.error,
TypeError — may escape, because the consumer catches that one type to dead-letter a record.

Two tiers: an exhaustive sweep (every header replaced by every nasty value, every byte of every
encoding overwritten), then hypothesis combining random mutations of keys, values and bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.contract import FrameMeta, decode_frame, encode_frame
from ingest.errors import FrameError

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
H, W = 8, 12


def _valid(encoding: str, channels: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    rng = np.random.default_rng(channels)
    shape = (H, W) if channels == 1 else (H, W, 3)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    meta = FrameMeta(line_id="L1", camera_id="cam0", frame_id="f-1", item_id="i-1",
                     captured_at=NOW - timedelta(milliseconds=30), encoding=encoding, width=W, height=H,
                     channels=channels, dtype="uint8" if encoding == "raw" else None, recipe="vials",
                     deadline_ms=500)
    return encode_frame(img, meta)


FRAMES = {(e, c): _valid(e, c) for e in ("png", "jpeg", "raw") for c in (1, 3)}

#: Header values that have broken parsers before: out-of-range times, non-UTF-8, huge, empty,
#: signs, exponents, NUL, surrogates' UTF-8, the largest ints.
NASTY_VALUES: tuple[bytes, ...] = (
    b"", b"\x00", b"\xff\xfe", b"\xed\xa0\x80", b"-1", b"0", b"+1", b"1e9", b"99999999999999999999",
    b"999999999999", b"-999999999999", b"NaN", b" 1", b"1 ", b"x" * 1025, b"\xc3\xa9",
    b"0001-01-01T00:00:00+05:00", b"9999-12-31T23:59:59.9-05:00", b"9999-12-31T23:59:59.9+00:00",
    b"0001-01-01T00:00:00+00:00", b"2026-12-03T12:00:00", b"2026-12-03T12:00:00+24:00",
    b"2026-02-30T00:00:00+00:00", b"jpeg", b"png", b"raw", b"uint16", b"uint64", b"3", b"1", b"16384",
    b"16385", b"L1", b"a" * 256, b"a" * 257,
)


def _check(value, headers) -> None:
    try:
        meta, image = decode_frame(value, headers, now=NOW)
    except FrameError as exc:
        assert type(exc).__module__ == "ingest.errors", type(exc)
        assert exc.field and exc.reason
        return
    assert isinstance(image, np.ndarray) and image.shape == meta.shape


# ----------------------------------------------------------------------------- exhaustive sweep
@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_every_header_replaced_by_every_nasty_value(kind):
    value, headers = FRAMES[kind]
    for i in range(len(headers)):
        key = headers[i][0]
        for nasty in NASTY_VALUES:
            _check(value, headers[:i] + [(key, nasty)] + headers[i + 1:])
        _check(value, headers[:i] + headers[i + 1:])                        # dropped
        _check(value, headers[:i + 1] + [headers[i]] + headers[i + 1:])     # repeated
        _check(value, headers[:i] + [(key.encode(), headers[i][1])] + headers[i + 1:])  # bytes key
        _check(value, headers[:i] + [(key.upper(), headers[i][1])] + headers[i + 1:])   # unknown key
        _check(value, headers[:i] + [(b"\xff" + key.encode(), headers[i][1])] + headers[i + 1:])
        _check(value, headers[:i] + [(key, None)] + headers[i + 1:])


@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_every_byte_overwritten(kind):
    value, headers = FRAMES[kind]
    for pos in range(len(value)):
        for b in (0x00, 0xFF, value[pos] ^ 0x01, value[pos] ^ 0x80):
            _check(value[:pos] + bytes([b]) + value[pos + 1:], headers)
        _check(value[:pos], headers)                     # truncated here
        _check(value[:pos] + value[pos + 1:], headers)   # one byte deleted


# ----------------------------------------------------------------------------- random mutations
_keys = st.one_of(st.sampled_from([k for k, _ in FRAMES[("png", 1)][1]] + ["dtype", "replay_of", "x"]),
                  st.text(max_size=12), st.binary(max_size=12))
_values = st.one_of(st.sampled_from(NASTY_VALUES), st.binary(max_size=64), st.none(),
                    st.text(max_size=40).map(str.encode))
_mutation = st.one_of(
    st.tuples(st.just("set_value"), st.integers(0, 20), _values),
    st.tuples(st.just("set_key"), st.integers(0, 20), _keys),
    st.tuples(st.just("drop"), st.integers(0, 20), st.none()),
    st.tuples(st.just("dup"), st.integers(0, 20), st.none()),
    st.tuples(st.just("add"), _keys, _values),
    st.tuples(st.just("byte"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.none()),
    st.tuples(st.just("splice"), st.integers(0, 10_000), st.binary(min_size=1, max_size=32)),
)


def _apply(value: bytes, headers: list, op) -> tuple[bytes, list]:
    name, a, b = op
    headers = list(headers)
    if name in ("set_value", "set_key", "drop", "dup") and headers:
        i = a % len(headers)
        if name == "set_value":
            headers[i] = (headers[i][0], b)
        elif name == "set_key":
            headers[i] = (b, headers[i][1])
        elif name == "drop":
            del headers[i]
        else:
            headers.insert(i, headers[i])
    elif name == "add":
        headers.append((a, b))
    elif name == "byte" and value:
        i = a % len(value)
        value = value[:i] + bytes([b]) + value[i + 1:]
    elif name == "cut":
        value = value[: a % (len(value) + 1)]
    elif name == "splice":
        i = a % (len(value) + 1)
        value = value[:i] + b + value[i:]
    return value, headers


@settings(max_examples=400, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(FRAMES)), ops=st.lists(_mutation, min_size=1, max_size=6))
def test_random_mutations_raise_only_frame_errors(kind, ops):
    value, headers = FRAMES[kind]
    for op in ops:
        value, headers = _apply(value, headers, op)
    _check(value, headers)
