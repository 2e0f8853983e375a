"""Frame contract: round trips for every encoding and a typed error for every kind of bad input."""

from __future__ import annotations

import functools
import struct
import zlib
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from ingest.contract import (
    HEADER_NAMES,
    MAX_DECODED_BYTES,
    MAX_DIMENSION,
    SCHEMA_VERSION,
    Encoding,
    FrameMeta,
    decode_meta,
    encode_frame,
    meta_to_headers,
)
from ingest.contract import (
    decode_frame as _decode_frame,
)
from ingest.errors import (
    FrameError,
    IngestError,
    InvalidHeaderError,
    MissingHeaderError,
    SizeLimitError,
    SizeMismatchError,
    UndecodableImageError,
    UnknownSchemaVersionError,
    UnsupportedEncodingError,
)
from ingest.source import CapturedFrame

T0 = datetime(2026, 11, 30, 7, 0, 0, 123456, tzinfo=UTC)
#: The line's clock in these tests: one second after the frames were captured.
NOW = T0 + timedelta(seconds=1)
decode_frame = functools.partial(_decode_frame, now=NOW)


def meta(**kw) -> FrameMeta:
    base = dict(line_id="L1", camera_id="cam0", frame_id="cam0-000001", item_id="item-1",
                captured_at=T0, encoding="png", width=48, height=32, channels=1, recipe="vials")
    base.update(kw)
    return FrameMeta(**base)


def image(h=32, w=48, c=1, dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if c == 1 else (h, w, c)
    hi = np.iinfo(dtype).max
    return rng.integers(0, hi, shape, dtype=dtype, endpoint=True)


def smooth(h=32, w=48, c=1) -> np.ndarray:
    """A smooth image, so that JPEG error stays small."""
    y, x = np.mgrid[0:h, 0:w]
    g = ((x * 255) // max(w - 1, 1)).astype(np.uint8)
    if c == 1:
        return g
    return np.stack([g, ((y * 255) // max(h - 1, 1)).astype(np.uint8), 255 - g], axis=-1)


def drop(headers, name):
    return [(k, v) for k, v in headers if k != name]


def replace(headers, name, value: bytes):
    return [(k, value if k == name else v) for k, v in headers]


# ------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_lossless(channels):
    img = image(c=channels)
    m = meta(channels=channels)
    value, headers = encode_frame(img, m)
    got_meta, got = decode_frame(value, headers)
    assert got_meta == m
    assert got.dtype == np.uint8 and got.shape == m.shape
    np.testing.assert_array_equal(got, img)
    assert got.flags.writeable


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_close_and_rgb_order_kept(channels):
    img = smooth(c=channels)
    m = meta(encoding="jpeg", channels=channels)
    value, headers = encode_frame(img, m, jpeg_quality=95)
    assert value[:2] == b"\xff\xd8"
    got_meta, got = decode_frame(value, headers)
    assert got_meta == m and got.shape == img.shape
    assert np.abs(got.astype(int) - img.astype(int)).mean() < 3.0


def test_jpeg_file_is_a_correct_rgb_image():
    """Arrays are RGB; the JPEG bytes themselves must hold a red image when given red."""
    import cv2

    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    value, _ = encode_frame(red, meta(encoding="jpeg", channels=3, width=16, height=16))
    bgr = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_COLOR)
    assert bgr[8, 8, 2] > 240 and bgr[8, 8, 0] < 15


@pytest.mark.parametrize("dtype,channels", [("uint8", 1), ("uint8", 3), ("uint16", 1)])
def test_raw_round_trip_exact(dtype, channels):
    img = image(c=channels, dtype=np.dtype(dtype).type)
    m = meta(encoding="raw", dtype=dtype, channels=channels)
    value, headers = encode_frame(img, m)
    assert len(value) == m.decoded_nbytes
    got_meta, got = decode_frame(value, headers)
    assert got_meta == m and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, img)
    assert got.flags.writeable


def test_gray_image_with_channel_axis_is_accepted():
    img = image()[:, :, None]
    value, headers = encode_frame(img, meta())
    np.testing.assert_array_equal(decode_frame(value, headers)[1], img[:, :, 0])


def test_headers_are_named_after_fields_and_text():
    m = meta(deadline_ms=250, replay_of="cam0-000000")
    headers = dict(meta_to_headers(m))
    assert set(headers) == set(HEADER_NAMES) - {"dtype"}
    assert headers["schema_version"] == str(SCHEMA_VERSION).encode()
    assert headers["captured_at"] == b"2026-11-30T07:00:00.123456+00:00"
    assert headers["deadline_ms"] == b"250" and headers["replay_of"] == b"cam0-000000"
    assert decode_meta(list(headers.items())) == m


def test_optional_headers_left_out_when_unset():
    names = {k for k, _ in meta_to_headers(meta())}
    assert not names & {"dtype", "deadline_ms", "replay_of"}


def test_captured_at_is_normalised_to_utc():
    cet = timezone(timedelta(hours=1))
    m = meta(captured_at=datetime(2026, 11, 30, 8, 0, tzinfo=cet))
    assert m.captured_at == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    assert m.captured_at.utcoffset() == timedelta(0)


def test_unknown_headers_are_ignored():
    value, headers = encode_frame(image(), meta())
    decode_frame(value, headers + [("traceparent", b"00-abc"), ("x", b"\xff")])


def test_from_captured_derives_geometry():
    img = image(c=3)
    frame = CapturedFrame(image=img, line_id="L1", camera_id="cam2", frame_id="f9", item_id="i9",
                          captured_at=T0, recipe="vials")
    m = FrameMeta.from_captured(frame, "raw", deadline_ms=100)
    assert (m.width, m.height, m.channels, m.dtype, m.deadline_ms) == (48, 32, 3, "uint8", 100)
    assert FrameMeta.from_captured(frame, Encoding.JPEG).dtype is None


# ---------------------------------------------------------------------------- model construction
@pytest.mark.parametrize("kw", [
    {"captured_at": datetime(2026, 1, 1)},          # naive
    {"camera_id": "cam 0"},                          # space
    {"frame_id": ""},
    {"channels": 2},
    {"width": 0},
    {"width": MAX_DIMENSION + 1},
    {"encoding": "raw"},                             # raw without dtype
    {"dtype": "uint8"},                              # dtype on png
    {"schema_version": 99},
    {"extra_field": 1},
    {"deadline_ms": 0},
])
def test_model_rejects_bad_values(kw):
    with pytest.raises(ValidationError):
        meta(**kw)


# ----------------------------------------------------------------------------------- typed errors
def good(encoding="png", channels=1):
    m = meta(encoding=encoding, channels=channels, dtype="uint8" if encoding == "raw" else None)
    img = smooth(c=channels)
    return encode_frame(img, m)


@pytest.mark.parametrize("name", ["schema_version", "line_id", "camera_id", "frame_id", "item_id",
                                  "captured_at", "encoding", "width", "height", "channels", "recipe"])
def test_missing_header_names_the_field(name):
    value, headers = good()
    with pytest.raises(MissingHeaderError) as ei:
        decode_frame(value, drop(headers, name))
    assert ei.value.field == name
    assert isinstance(ei.value, FrameError) and isinstance(ei.value, IngestError)


def test_missing_dtype_on_raw():
    value, headers = good("raw")
    with pytest.raises(MissingHeaderError) as ei:
        decode_frame(value, drop(headers, "dtype"))
    assert ei.value.field == "dtype"


def test_no_headers_at_all():
    with pytest.raises(MissingHeaderError):
        decode_frame(b"x", None)


@pytest.mark.parametrize("name,bad", [
    ("width", b"abc"), ("width", b"-4"), ("height", b"1e3"), ("channels", b"2"),
    ("captured_at", b"yesterday"), ("captured_at", b"2026-11-30T07:00:00"),
    ("camera_id", b"cam 0"), ("frame_id", b""), ("line_id", b"\xff\xfe"), ("recipe", b"x" * 2000),
    ("schema_version", b"one"),
])
def test_invalid_header_names_the_field(name, bad):
    value, headers = good()
    with pytest.raises(InvalidHeaderError) as ei:
        decode_frame(value, replace(headers, name, bad))
    assert ei.value.field == name
    assert name in str(ei.value)


def test_repeated_header_is_invalid():
    value, headers = good()
    with pytest.raises(InvalidHeaderError) as ei:
        decode_frame(value, headers + [("frame_id", b"other")])
    assert ei.value.field == "frame_id"


def test_dtype_on_png_is_invalid():
    value, headers = good()
    with pytest.raises(InvalidHeaderError) as ei:
        decode_frame(value, headers + [("dtype", b"uint8")])
    assert ei.value.field == "dtype"


def test_unknown_schema_version():
    value, headers = good()
    with pytest.raises(UnknownSchemaVersionError) as ei:
        decode_frame(value, replace(headers, "schema_version", b"7"))
    assert ei.value.field == "schema_version"


@pytest.mark.parametrize("enc", [b"webp", b"JPEG", b""])
def test_unsupported_encoding(enc):
    value, headers = good()
    with pytest.raises(UnsupportedEncodingError) as ei:
        decode_frame(value, replace(headers, "encoding", enc))
    assert ei.value.field == "encoding"


@pytest.mark.parametrize("name,val", [("width", str(MAX_DIMENSION + 1)), ("height", "99999999")])
def test_hostile_dimension_is_refused_before_allocation(name, val):
    value, headers = good("raw")
    with pytest.raises(SizeLimitError) as ei:
        decode_frame(value, replace(headers, name, val.encode()))
    assert ei.value.field == name


def test_hostile_decoded_size_is_refused():
    side = int((MAX_DECODED_BYTES / 3) ** 0.5) + 16  # each side legal, the product not
    assert side <= MAX_DIMENSION
    value, headers = good("png", 3)
    headers = replace(replace(headers, "width", str(side).encode()), "height", str(side).encode())
    with pytest.raises(SizeLimitError):
        decode_frame(value, headers)


@pytest.mark.parametrize("encoding", ["png", "jpeg", "raw"])
def test_wrong_declared_width(encoding):
    value, headers = good(encoding)
    with pytest.raises(SizeMismatchError) as ei:
        decode_frame(value, replace(headers, "width", b"47"))
    assert ei.value.field == ("value" if encoding == "raw" else "width")


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_wrong_declared_channels(encoding):
    value, headers = good(encoding, channels=3)
    with pytest.raises(SizeMismatchError) as ei:
        decode_frame(value, replace(headers, "channels", b"1"))
    assert ei.value.field == "channels"


def test_raw_short_by_one_byte():
    value, headers = good("raw")
    with pytest.raises(SizeMismatchError) as ei:
        decode_frame(value[:-1], headers)
    assert ei.value.field == "value"


def test_small_png_declaring_huge_image_in_its_own_header():
    """A PNG whose IHDR claims 16000x16000 while the headers say 48x32: refused before decoding."""
    value, headers = good()
    ihdr = struct.pack(">IIBBBBB", 16000, 16000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    forged = value[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + value[33:]
    with pytest.raises(SizeMismatchError) as ei:
        decode_frame(forged, headers)
    assert ei.value.field == "width"


# zeroed_middle only for PNG: JPEG carries no checksum, so zeroed entropy data still decodes
# (corruption in transit is caught by Kafka's record-batch CRC instead).
@pytest.mark.parametrize("encoding,corrupt", [
    (e, c) for e in ("png", "jpeg") for c in ("garbage", "truncated", "empty", "none")
] + [("png", "zeroed_middle")])
def test_corrupt_bytes_are_undecodable(encoding, corrupt):
    value, headers = good(encoding)
    if corrupt == "garbage":
        bad = bytes(np.random.default_rng(1).integers(0, 256, len(value), dtype=np.uint8))
    elif corrupt == "truncated":
        bad = value[: len(value) // 2]
    elif corrupt == "empty":
        bad = b""
    elif corrupt == "none":
        bad = None
    else:
        mid = len(value) // 2
        bad = value[:mid] + b"\x00" * 16 + value[mid + 16:]
    with pytest.raises(UndecodableImageError) as ei:
        decode_frame(bad, headers)
    assert ei.value.field == "value"


def test_png_with_wrong_crc_is_undecodable():
    value, headers = good()
    # flip one byte inside the IDAT data: libpng checks the chunk CRC
    idat = value.index(b"IDAT")
    bad = bytearray(value)
    bad[idat + 6] ^= 0xFF
    with pytest.raises(UndecodableImageError):
        decode_frame(bytes(bad), headers)


def test_oversize_value_is_a_size_limit():
    from ingest.topics import MAX_MESSAGE_BYTES

    value, headers = good()
    with pytest.raises(SizeLimitError) as ei:
        decode_frame(value + b"\x00" * MAX_MESSAGE_BYTES, headers)
    assert ei.value.field == "value"


# --------------------------------------------------------------------------------- encoder checks
@pytest.mark.parametrize("img,field", [
    (np.zeros((32, 47), np.uint8), "width"),
    (np.zeros((31, 48), np.uint8), "height"),
    (np.zeros((32, 48, 3), np.uint8), "channels"),
    (np.zeros((32, 48), np.float32), "image"),
])
def test_encoder_refuses_image_not_matching_meta(img, field):
    with pytest.raises(SizeMismatchError) as ei:
        encode_frame(img, meta())
    assert ei.value.field == field


def test_encoder_refuses_raw_dtype_mismatch():
    with pytest.raises(SizeMismatchError) as ei:
        encode_frame(np.zeros((32, 48), np.uint16), meta(encoding="raw", dtype="uint8"))
    assert ei.value.field == "dtype"


def test_frame_error_pickles_with_field():
    import pickle

    err = pickle.loads(pickle.dumps(SizeMismatchError("width", "bad")))
    assert type(err) is SizeMismatchError and err.field == "width" and err.reason == "bad"
