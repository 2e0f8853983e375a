"""The frame contract: what one message on the frames topic is, and its codec.

A frame is one Kafka record:

* **key** — the camera id (UTF-8), so that one camera's frames stay in order in one partition;
* **value** — the encoded image: JPEG or PNG (8-bit), or ``raw`` (C-order ``(H, W[, C])`` bytes,
  little-endian, of the ``dtype`` header);
* **headers** — :class:`FrameMeta`, one header per field, named exactly as the field, value UTF-8
  text (integers in decimal, ``captured_at`` as ISO 8601 with microseconds and ``+00:00``).
  Headers that are not contract fields are ignored by the decoder (tracing and the like).

Arrays are ``uint8`` (``uint16`` allowed for raw) with shape ``(H, W)`` for one channel and
``(H, W, 3)`` in RGB order for three; the codec converts to and from OpenCV's BGR so that the JPEG
and PNG files themselves are correct images.

:func:`decode_frame` trusts nothing: every header is parsed and validated, declared sizes are
checked against :data:`MAX_DIMENSION` / :data:`MAX_DECODED_BYTES` *before* anything is allocated,
and the width/height/channels inside a JPEG or PNG are read from its own header and compared with
the declared ones before the image is decoded (so a small file declaring a huge image is refused
cheaply). Each failure raises a :class:`~ingest.errors.FrameError` subclass naming the field,
and nothing else: whatever headers and bytes arrive (a time outside what a UTC datetime can hold,
a key that is not text, a repeated or oversized header, a corrupt image), the caller catches one
type and dead-letters the record with its reason.

Clock skew: :func:`decode_frame` also checks ``captured_at`` against the line's clock
(:func:`check_capture_time`, bounds in :class:`~ingest.settings.ClockSettings`): a capture time
further in the future than ``max_future_ms`` or older than ``max_age_s`` raises
:class:`~ingest.errors.ClockSkewError` (never clamped). Replayed frames (``replay_of``) are exempt
from the age bound only. :func:`decode_meta` reads headers without that check (recorders and
replayers read old frames on purpose).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ingest.errors import (
    ClockSkewError,
    FrameError,
    InvalidHeaderError,
    MissingHeaderError,
    SizeLimitError,
    SizeMismatchError,
    UndecodableImageError,
    UnknownSchemaVersionError,
    UnsupportedEncodingError,
)
from ingest.settings import ClockSettings
from ingest.topics import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from ingest.source import CapturedFrame

#: Version of the frame contract written by this code; bump it on an incompatible change.
SCHEMA_VERSION = 1
#: Versions :func:`decode_frame` understands.
SUPPORTED_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})

#: Largest width or height a frame may declare.
MAX_DIMENSION = 16384
#: Largest decoded image (``width * height * channels * itemsize``) a frame may declare.
MAX_DECODED_BYTES = 64 * 1024 * 1024
#: Largest single header value (bytes); ids and names are short.
MAX_HEADER_BYTES = 1024
#: Largest ``deadline_ms``: one hour.
MAX_DEADLINE_MS = 3600 * 1000
#: Most headers a frame may carry (contract fields plus tracing and the like).
MAX_HEADERS = 64

Headers = list[tuple[str, bytes]]

#: Ids and names: printable ASCII without spaces, 1..256 characters (they become Kafka keys,
#: Redis key parts and file names in archives, so no separators that need escaping beyond these).
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,255}$"
Ident = Annotated[str, Field(pattern=_ID_PATTERN)]
_INT_RE = re.compile(r"^-?[0-9]{1,12}$")


class Encoding(StrEnum):
    """How the value holds the image."""

    JPEG = "jpeg"
    PNG = "png"
    RAW = "raw"


RawDtype = Literal["uint8", "uint16"]
_ITEMSIZE = {"uint8": 1, "uint16": 2}


class FrameMeta(BaseModel):
    """The metadata of one frame, carried in Kafka headers (one header per field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    line_id: Ident
    camera_id: Ident
    frame_id: Ident
    item_id: Ident
    captured_at: AwareDatetime
    encoding: Encoding
    width: int = Field(ge=1, le=MAX_DIMENSION)
    height: int = Field(ge=1, le=MAX_DIMENSION)
    channels: Literal[1, 3]
    dtype: RawDtype | None = None
    recipe: Ident
    deadline_ms: int | None = Field(default=None, ge=1, le=MAX_DEADLINE_MS)
    replay_of: Ident | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(f"unknown schema version {v}; supported {sorted(SUPPORTED_SCHEMA_VERSIONS)}")
        return v

    @field_validator("captured_at")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime:
        try:
            return v.astimezone(UTC)
        except (OverflowError, ValueError) as exc:  # year 1 with +05:00, year 9999 with -05:00
            raise ValueError(f"{v.isoformat()} is outside the range of a UTC time (years 1-9999)") from exc

    @model_validator(mode="after")
    def _dtype_iff_raw(self) -> FrameMeta:
        if self.encoding is Encoding.RAW and self.dtype is None:
            raise ValueError("dtype is required for raw frames")
        if self.encoding is not Encoding.RAW and self.dtype is not None:
            raise ValueError(f"dtype is only for raw frames, not {self.encoding.value}")
        if self.decoded_nbytes > MAX_DECODED_BYTES:
            raise ValueError(f"decoded size {self.decoded_nbytes} B exceeds {MAX_DECODED_BYTES} B")
        return self

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self.dtype] if self.dtype else 1

    @property
    def decoded_nbytes(self) -> int:
        """Bytes of the decoded array."""
        return self.width * self.height * self.channels * self.itemsize

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the decoded array: ``(H, W)`` or ``(H, W, 3)``."""
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, 3)

    @classmethod
    def from_captured(
        cls,
        frame: CapturedFrame,
        encoding: Encoding | str,
        *,
        dtype: str | None = None,
        deadline_ms: int | None = None,
        replay_of: str | None = None,
    ) -> FrameMeta:
        """Metadata for a captured frame; width/height/channels (and dtype for raw) from its image."""
        enc = Encoding(encoding)
        image = frame.image
        channels = 1 if image.ndim == 2 else int(image.shape[2])
        if enc is Encoding.RAW and dtype is None:
            dtype = str(image.dtype)
        return cls(
            line_id=frame.line_id,
            camera_id=frame.camera_id,
            frame_id=frame.frame_id,
            item_id=frame.item_id,
            captured_at=frame.captured_at,
            encoding=enc,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            channels=channels,
            dtype=dtype,
            recipe=frame.recipe,
            deadline_ms=deadline_ms,
            replay_of=replay_of,
        )


#: Header names, in field order: the one home for them.
HEADER_NAMES: tuple[str, ...] = tuple(FrameMeta.model_fields)
_OPTIONAL_HEADERS = frozenset({"dtype", "deadline_ms", "replay_of"})
_INT_FIELDS = frozenset({"schema_version", "width", "height", "channels", "deadline_ms"})


# --------------------------------------------------------------------------------------- headers
def meta_to_headers(meta: FrameMeta) -> Headers:
    """The Kafka headers of ``meta`` (optional fields left out when unset)."""
    out: Headers = []
    for name in HEADER_NAMES:
        value = getattr(meta, name)
        if value is None:
            continue
        if isinstance(value, datetime):
            text = value.astimezone(UTC).isoformat(timespec="microseconds")
        elif isinstance(value, Encoding):
            text = value.value
        else:
            text = str(value)
        out.append((name, text.encode("utf-8")))
    return out


def _header_key(entry: object) -> tuple[str, object]:
    """``(key, raw value)`` of one header entry; keys must be text (bytes keys must be UTF-8).

    kafka-python hands keys as ``str`` and raises inside ``poll()`` on a key that is not UTF-8;
    a consumer that decodes keys itself may pass ``bytes`` or a ``str`` with lone surrogates
    (``errors="surrogateescape"``). Both kinds of not-UTF-8 key are refused here, naming the key.
    """
    if not isinstance(entry, tuple | list) or len(entry) != 2:
        raise InvalidHeaderError("headers", f"header entry is not a (key, value) pair: {type(entry).__name__}")
    key, raw = entry
    if isinstance(key, bytes | bytearray | memoryview):
        try:
            key = bytes(key).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidHeaderError("headers", f"header key {bytes(key)[:40]!r} is not UTF-8") from exc
    elif not isinstance(key, str):
        raise InvalidHeaderError("headers", f"header key is {type(key).__name__}, not text")
    else:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidHeaderError("headers", f"header key {key[:40]!r} is not UTF-8") from exc
    return key, raw


def _header_texts(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Contract headers as text; a repeated, non-bytes, oversized or non-UTF-8 one is invalid, and
    so is a header list that is not a list of pairs, has a key that is not UTF-8 text, or holds
    more than :data:`MAX_HEADERS` entries."""
    texts: dict[str, str] = {}
    if headers is None:
        return texts
    if isinstance(headers, str | bytes | bytearray | memoryview | dict):
        raise InvalidHeaderError("headers", f"headers are {type(headers).__name__}, not a list of pairs")
    try:
        entries = list(headers)
    except TypeError as exc:
        raise InvalidHeaderError("headers", f"headers are {type(headers).__name__}, not a list of pairs") from exc
    if len(entries) > MAX_HEADERS:
        raise SizeLimitError("headers", f"{len(entries)} headers exceed the limit of {MAX_HEADERS}")
    for entry in entries:
        key, raw = _header_key(entry)
        if key not in FrameMeta.model_fields:
            continue
        if key in texts:
            raise InvalidHeaderError(key, "header repeated")
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise InvalidHeaderError(key, f"header value is {type(raw).__name__}, not bytes")
        if len(raw) > MAX_HEADER_BYTES:
            raise InvalidHeaderError(key, f"header value of {len(raw)} B exceeds {MAX_HEADER_BYTES} B")
        try:
            texts[key] = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidHeaderError(key, f"not UTF-8 ({exc.reason})") from exc
    return texts


def _parse_int(field: str, text: str) -> int:
    if not _INT_RE.match(text):
        raise InvalidHeaderError(field, f"not a decimal integer: {text[:40]!r}")
    return int(text)


def decode_meta(headers: Iterable[tuple[str, bytes | None]] | None) -> FrameMeta:
    """Validate the headers of a frame without touching its value.

    Order of checks: schema version, encoding, required headers, value syntax, size limits, then
    the model's own rules. Raises a :class:`~ingest.errors.FrameError` subclass naming the field.
    """
    texts = _header_texts(headers)
    if "schema_version" not in texts:
        raise MissingHeaderError("schema_version", "header missing")
    version = _parse_int("schema_version", texts["schema_version"])
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise UnknownSchemaVersionError(
            "schema_version", f"version {version} unknown; supported {sorted(SUPPORTED_SCHEMA_VERSIONS)}"
        )
    if "encoding" not in texts:
        raise MissingHeaderError("encoding", "header missing")
    try:
        encoding = Encoding(texts["encoding"])
    except ValueError as exc:
        raise UnsupportedEncodingError(
            "encoding", f"{texts['encoding'][:40]!r} is not one of {[e.value for e in Encoding]}"
        ) from exc
    for name in HEADER_NAMES:
        if name not in texts and name not in _OPTIONAL_HEADERS:
            raise MissingHeaderError(name, "header missing")
    if encoding is Encoding.RAW and "dtype" not in texts:
        raise MissingHeaderError("dtype", "header missing (required for raw frames)")
    if encoding is not Encoding.RAW and "dtype" in texts:
        raise InvalidHeaderError("dtype", f"only raw frames carry a dtype, this one is {encoding.value}")

    values: dict[str, object] = {}
    for name, text in texts.items():
        if name in _INT_FIELDS:
            values[name] = _parse_int(name, text)
        elif name == "captured_at":
            values[name] = _parse_time(name, text)
        else:
            values[name] = text
    _check_limits(values)
    try:
        return FrameMeta.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "headers"
        raise InvalidHeaderError(field, err["msg"]) from exc


def _parse_time(field: str, text: str) -> datetime:
    """An ISO 8601 time with an offset, as UTC; raises InvalidHeaderError for anything else,
    including a time that exists with its offset but not in UTC (``0001-01-01T00:00+05:00``)."""
    try:
        stamp = datetime.fromisoformat(text)
    except (ValueError, OverflowError) as exc:
        raise InvalidHeaderError(field, f"not an ISO 8601 time: {text[:40]!r}") from exc
    if stamp.tzinfo is None or stamp.utcoffset() is None:
        raise InvalidHeaderError(field, "time has no UTC offset")
    try:
        return stamp.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise InvalidHeaderError(
            field, f"{text[:40]!r} is outside the range of a UTC time (years 1-9999)"
        ) from exc


_DEFAULT_CLOCK: ClockSettings | None = None


def default_clock() -> ClockSettings:
    """The clock bounds from the environment (``GRDLINE_CLOCK_*``), read once per process."""
    global _DEFAULT_CLOCK
    if _DEFAULT_CLOCK is None:
        _DEFAULT_CLOCK = ClockSettings()
    return _DEFAULT_CLOCK


def check_capture_time(
    meta: FrameMeta, *, now: datetime | None = None, clock: ClockSettings | None = None,
    replay: bool | None = None,
) -> None:
    """Refuse a ``captured_at`` outside the line's clock bounds with :class:`ClockSkewError`.

    ``now`` is the line's time (default: the wall clock); ``clock`` the bounds (default:
    :func:`default_clock`). A replayed frame is exempt from the age bound: ``replay`` says whether
    the frame is one (the line passes whether it was consumed from the replay topic, so a header
    never buys the exemption there); None (tools) = judged by the ``replay_of`` header.
    """
    clock = clock or default_clock()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    ahead_ms = (meta.captured_at - now) / timedelta(milliseconds=1)
    if ahead_ms > clock.max_future_ms:
        raise ClockSkewError(
            "captured_at",
            f"{meta.captured_at.isoformat()} is {ahead_ms / 1000:.3f} s ahead of the line's clock "
            f"({now.isoformat()}); tolerance {clock.max_future_ms} ms",
        )
    age_s = -ahead_ms / 1000
    replayed = meta.replay_of is not None if replay is None else replay
    if not replayed and age_s > clock.max_age_s:
        raise ClockSkewError(
            "captured_at",
            f"{meta.captured_at.isoformat()} is {age_s:.0f} s older than the line's clock "
            f"({now.isoformat()}); the oldest accepted is {clock.max_age_s:.0f} s",
        )


def _check_limits(values: dict[str, object]) -> None:
    """Refuse declared sizes beyond the limits before the model (or anything else) sees them."""
    for name in ("width", "height"):
        v = values[name]
        assert isinstance(v, int)
        if v > MAX_DIMENSION:
            raise SizeLimitError(name, f"{v} exceeds the limit of {MAX_DIMENSION}")
    width, height, channels = values["width"], values["height"], values["channels"]
    assert isinstance(width, int) and isinstance(height, int) and isinstance(channels, int)
    itemsize = _ITEMSIZE.get(str(values.get("dtype")), 1)
    if width > 0 and height > 0 and 0 < channels <= 4:
        nbytes = width * height * channels * itemsize
        if nbytes > MAX_DECODED_BYTES:
            raise SizeLimitError("width", f"declared {width}x{height}x{channels} = {nbytes} B exceeds {MAX_DECODED_BYTES} B")


# ----------------------------------------------------------------------------------------- codec
def _check_image(image: np.ndarray, meta: FrameMeta) -> np.ndarray:
    """``image`` as ``(H, W)`` or ``(H, W, 3)`` matching ``meta``; raises SizeMismatchError."""
    if not isinstance(image, np.ndarray):
        raise SizeMismatchError("image", f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3):
        raise SizeMismatchError("image", f"expected (H, W) or (H, W, C), got shape {image.shape}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if image.shape[0] != meta.height:
        raise SizeMismatchError("height", f"meta says {meta.height}, image has {image.shape[0]}")
    if image.shape[1] != meta.width:
        raise SizeMismatchError("width", f"meta says {meta.width}, image has {image.shape[1]}")
    if channels != meta.channels:
        raise SizeMismatchError("channels", f"meta says {meta.channels}, image has {channels}")
    expected = np.dtype(meta.dtype or "uint8")
    if image.dtype != expected:
        field = "dtype" if meta.encoding is Encoding.RAW else "image"
        raise SizeMismatchError(field, f"{meta.encoding.value} frame needs {expected}, image is {image.dtype}")
    return image


def encode_frame(
    image: np.ndarray, meta: FrameMeta, *, jpeg_quality: int = 90, png_compression: int = 1
) -> tuple[bytes, Headers]:
    """Encode ``image`` as ``meta.encoding``; returns ``(value, headers)`` for a Kafka record.

    ``image`` must match ``meta`` (height, width, channels, dtype) or SizeMismatchError is raised.
    """
    image = _check_image(image, meta)
    if meta.encoding is Encoding.RAW:
        value = np.ascontiguousarray(image, dtype=np.dtype(meta.dtype).newbyteorder("<")).tobytes()
    else:
        import cv2

        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        if meta.encoding is Encoding.JPEG:
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        else:
            ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)])
        if not ok:
            raise FrameError("image", f"OpenCV could not encode the image as {meta.encoding.value}")
        value = buf.tobytes()
    return value, meta_to_headers(meta)


def decode_frame(
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None,
    *,
    now: datetime | None = None,
    clock: ClockSettings | None = None,
    check_clock: bool = True,
    replay: bool | None = None,
) -> tuple[FrameMeta, np.ndarray]:
    """Validate headers and decode the value; returns ``(meta, image)``.

    ``image`` is a fresh, writable array of ``meta.shape`` (RGB for three channels), ``uint8``
    (or ``meta.dtype`` for raw). Raises a :class:`~ingest.errors.FrameError` subclass naming the
    field, and no other exception: missing/invalid/repeated header, unknown schema version,
    unsupported encoding, capture time outside the clock bounds (:func:`check_capture_time` with
    ``now``, ``clock`` and ``replay``; ``check_clock=False`` skips it, for tools reading old frames), size
    limit, size mismatch, undecodable bytes.
    """
    meta = decode_meta(headers)
    if check_clock:
        check_capture_time(meta, now=now, clock=clock, replay=replay)
    if value is None:
        raise UndecodableImageError("value", "no image bytes")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise UndecodableImageError("value", f"value is {type(value).__name__}, not bytes")
    if len(value) == 0:
        raise UndecodableImageError("value", "no image bytes")
    if len(value) > MAX_MESSAGE_BYTES:
        raise SizeLimitError("value", f"{len(value)} B exceeds {MAX_MESSAGE_BYTES} B")
    value = bytes(value)
    if meta.encoding is Encoding.RAW:
        if len(value) != meta.decoded_nbytes:
            raise SizeMismatchError(
                "value", f"raw {meta.dtype} {meta.shape} needs {meta.decoded_nbytes} B, got {len(value)} B"
            )
        dtype = np.dtype(meta.dtype).newbyteorder("<")
        image = np.frombuffer(value, dtype=dtype).reshape(meta.shape).astype(meta.dtype, copy=True)
        return meta, image
    if meta.encoding is Encoding.PNG:
        width, height, channels = _png_geometry(value)
    else:
        width, height, channels = _jpeg_geometry(value)
    for name, got, want in (("width", width, meta.width), ("height", height, meta.height),
                            ("channels", channels, meta.channels)):
        if got != want:
            raise SizeMismatchError(name, f"header says {want}, {meta.encoding.value} bytes hold {got}")
    import cv2

    flags = (cv2.IMREAD_GRAYSCALE if meta.channels == 1 else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        decoded = cv2.imdecode(np.frombuffer(value, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise UndecodableImageError("value", f"OpenCV refused the {meta.encoding.value} bytes: {exc}") from exc
    if decoded is None:
        raise UndecodableImageError("value", f"OpenCV could not decode the {meta.encoding.value} bytes")
    if decoded.shape[:2] != (meta.height, meta.width):  # pragma: no cover - geometry parsed above
        raise SizeMismatchError("value", f"decoded {decoded.shape}, expected {meta.shape}")
    if decoded.ndim == 3:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return meta, decoded


# ------------------------------------------------------------------- image-header geometry sniffing
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _png_geometry(value: bytes) -> tuple[int, int, int]:
    """``(width, height, channels)`` from a PNG's IHDR; 8-bit gray (1) or RGB/palette (3) only."""
    if len(value) < 33 or not value.startswith(_PNG_SIGNATURE) or value[12:16] != b"IHDR":
        raise UndecodableImageError("value", "not a PNG (bad signature or no IHDR)")
    if not value.endswith(_PNG_IEND):
        raise UndecodableImageError("value", "PNG truncated (no IEND chunk at the end)")
    width, height, depth, color = struct.unpack(">IIBB", value[16:26])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color)
    if channels is None:
        raise UndecodableImageError("value", f"PNG colour type {color} is invalid")
    if depth != 8:
        raise UndecodableImageError("value", f"PNG bit depth {depth}; the contract carries 8-bit PNG")
    return width, height, channels


def _jpeg_geometry(value: bytes) -> tuple[int, int, int]:
    """``(width, height, channels)`` from a JPEG's start-of-frame segment."""
    n = len(value)
    if n < 4 or value[:2] != b"\xff\xd8":
        raise UndecodableImageError("value", "not a JPEG (no SOI marker)")
    if not value.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise UndecodableImageError("value", "JPEG truncated (no EOI marker at the end)")
    i = 2
    while i + 4 <= n:
        if value[i] != 0xFF:
            raise UndecodableImageError("value", f"JPEG marker expected at byte {i}")
        marker = value[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            i += 2
            continue
        (length,) = struct.unpack(">H", value[i + 2 : i + 4])
        if length < 2 or i + 2 + length > n:
            raise UndecodableImageError("value", f"JPEG segment at byte {i} has a bad length {length}")
        if marker in _JPEG_SOF:
            if length < 8:
                raise UndecodableImageError("value", "JPEG start-of-frame segment too short")
            height, width, comps = struct.unpack(">HHB", value[i + 5 : i + 10])
            return width, height, comps
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise UndecodableImageError("value", "JPEG has no start-of-frame segment")
