"""What inference publishes: the per-frame :class:`Result` (Redis) and :class:`RejectCommand` (Kafka).

Both cross process boundaries, so both are pydantic models with ``extra="forbid"`` and an explicit
``schema_version``. Redis layout (see docs/interfaces.md):

* ``{prefix}:result:{frame_id}`` — a hash, one field per :class:`Result` field; scalars as text,
  ``boxes`` and ``timings_ms`` as JSON (timings rounded to the microsecond), ``mask_png`` the
  ROI-filtered mask at frame resolution as a 1-bit PNG (:func:`encode_mask`; empty when no pixel is
  set — read it with :func:`decode_mask` / :meth:`Result.mask`). TTL from config. Kept small on
  purpose: every byte is multiplied by rate × TTL (:mod:`inference.redis_memory`).
* ``{prefix}:stream:{line_id}`` — capped stream, one entry per decision (the hash without the mask).
* ``{prefix}:rejected:{line_id}:{item_id}`` — the reject idempotency claim (see :mod:`inference.sinks`).
* replayed frames (``replay_of`` set) are decided into ``{prefix}:{replay namespace}`` instead
  (:func:`results_prefix`): ``{prefix}:replay:result:{frame_id}``, ``{prefix}:replay:stream:{line}``.

A reject command is JSON on the rejects topic, keyed by item id, so all commands of one item land
in one partition and a compacted topic keeps one per item.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

#: Hash fields that hold JSON.
_JSON_FIELDS = ("boxes", "timings_ms")
#: Fields that may be None (stored as the empty string).
_NULLABLE = ("score", "deadline_at", "threshold", "late_policy", "failsafe", "replay_of")

#: Why a frame was decided without a model verdict (``Result.failsafe``): ``invalid_input`` is a
#: record whose line and item can be read but that the line cannot judge (decode or validation
#: failed: unknown recipe, missing ROI, oversized image, clock out of bounds); it is always a reject.
Failsafe = Literal["late", "model_failure", "timeout", "invalid_input"]


def result_key(prefix: str, frame_id: str) -> str:
    return f"{prefix}:result:{frame_id}"


def results_prefix(prefix: str, replay_namespace: str | None) -> str:
    """Where a frame's result and stream entry go: ``prefix`` for live frames,
    ``{prefix}:{replay_namespace}`` for replayed ones."""
    return prefix if replay_namespace is None else f"{prefix}:{replay_namespace}"


def stream_key(prefix: str, line_id: str) -> str:
    return f"{prefix}:stream:{line_id}"


def reject_claim_key(prefix: str, line_id: str, item_id: str) -> str:
    """The reject claim of one item of one line: two lines (or an item id reused by another line)
    never suppress each other's rejects."""
    return f"{prefix}:rejected:{line_id}:{item_id}"


class Box(BaseModel):
    """Axis-aligned box of one connected defect region, pixels at frame resolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    x: int
    y: int
    w: int
    h: int
    area: int


class Timings(BaseModel):
    """Per-stage latency of one frame in milliseconds, in order; the stages sum to ``total``
    (capture → decision) up to clock differences between camera and line.

    ``produce``: capture → the record's Kafka timestamp (camera encode, producer linger);
    ``kafka``: Kafka timestamp → the ingress' poll returned it (queued in Kafka);
    ``poll``: poll returned → on the ingress event loop, less this frame's own decode (the rest of
    the poll's records decoded, the redelivery lookup, the hop from the consumer thread);
    ``decode``: this frame's decode; ``group``: on the loop → its handle call to the model left;
    ``wait``: call left → its batch started (routing, Serve's batch queue, the batch ahead);
    ``model``: the batch's predict; ``post``: the batch's masks encoded (PNG, regions);
    ``reply``: batch done → decided at the ingress (the reply's way back);
    ``total``: capture → decision. The sinks and the offset commit come after the decision: they
    are in the ``grdline_stage_latency_seconds`` metric (stages ``sinks``, ``commit``), not here.
    A frame the model gave no answer for has zeros from ``wait`` to ``reply``.
    """

    model_config = ConfigDict(extra="forbid")
    produce: float = 0.0
    kafka: float = 0.0
    poll: float = 0.0
    decode: float = 0.0
    group: float = 0.0
    wait: float = 0.0
    model: float = 0.0
    post: float = 0.0
    reply: float = 0.0
    total: float = 0.0


class Result(BaseModel):
    """The decision on one frame. ``decision`` True = defective (reject). ``score`` is None when
    the model gave no verdict; then ``failsafe`` says why (``late``: past the deadline;
    ``model_failure``: the model raised or scored a non-finite value; ``timeout``: no answer within
    the default bound) and ``decision`` follows ``late_policy`` (the late or fail-safe policy)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    frame_id: str
    item_id: str
    line_id: str
    camera_id: str
    recipe: str
    captured_at: datetime
    decided_at: datetime
    deadline_at: datetime | None = None
    score: float | None
    decision: bool
    late: bool = False
    late_policy: Literal["reject", "pass"] | None = None
    failsafe: Failsafe | None = None
    replay_of: str | None = None
    threshold: float | None = None
    model_version: str = ""
    roi_id: str
    defect_area: int = 0
    boxes: list[Box] = Field(default_factory=list)
    timings_ms: Timings = Field(default_factory=Timings)
    mask_png: bytes = b""
    topic: str
    partition: int
    offset: int

    def to_redis(self, with_mask: bool = True) -> dict[str, bytes | str]:
        """Flat mapping for ``HSET`` / ``XADD``: text scalars, JSON lists, PNG bytes."""
        out: dict[str, bytes | str] = {}
        for name, value in self.model_dump(mode="json", exclude={"mask_png"}).items():
            if name == "timings_ms":  # microseconds are below any clock's truth; halves the field
                out[name] = json.dumps({k: round(v, 3) for k, v in value.items()}, separators=(",", ":"))
            elif name in _JSON_FIELDS:
                out[name] = json.dumps(value, separators=(",", ":"))
            elif value is None:
                out[name] = ""
            elif isinstance(value, bool):
                out[name] = "1" if value else "0"
            else:
                out[name] = str(value)
        if with_mask:
            out["mask_png"] = self.mask_png
        return out

    def mask(self) -> np.ndarray | None:
        """The ROI-filtered defect mask, bool ``(H, W)``; None when no pixel was set (or no mask)."""
        return decode_mask(self.mask_png)

    @classmethod
    def from_redis(cls, data: dict[bytes | str, bytes | str]) -> Result:
        """Inverse of :meth:`to_redis` (keys/values as returned by redis-py without decoding)."""
        fields: dict[str, object] = {}
        for k, v in data.items():
            key = k.decode() if isinstance(k, bytes) else k
            if key == "mask_png":
                fields[key] = v if isinstance(v, bytes) else v.encode("latin-1")
                continue
            text = v.decode() if isinstance(v, bytes) else v
            if key in _JSON_FIELDS:
                fields[key] = json.loads(text)
            elif text == "" and key in _NULLABLE:
                fields[key] = None
            elif key in ("decision", "late"):
                fields[key] = text == "1"
            else:
                fields[key] = text
        return cls.model_validate(fields)


class RejectCommand(BaseModel):
    """Tell the actuator to reject one physical item. One per item, keyed by ``item_id``.

    De-duplication for the consumer: ``command_id`` (``{line_id}/{item_id}``) is the same for
    every command about one item — the claim in Redis makes a second one rare (a crash between
    the broker ack and the ``sent`` mark), and an actuator that remembers the ids it acted on
    absorbs even that. ``frame_id`` names the frame that decided."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    command_id: str = ""
    item_id: str
    line_id: str
    camera_id: str
    frame_id: str
    score: float | None
    reason: Literal["defect", "late", "model_failure", "timeout", "invalid_input"]
    captured_at: datetime
    decided_at: datetime
    deadline_at: datetime | None = None
    replay_of: str | None = None

    @classmethod
    def from_result(cls, r: Result) -> RejectCommand:
        return cls(
            command_id=f"{r.line_id}/{r.item_id}",
            item_id=r.item_id,
            line_id=r.line_id,
            camera_id=r.camera_id,
            frame_id=r.frame_id,
            score=r.score,
            reason=r.failsafe or ("late" if r.late else "defect"),
            captured_at=r.captured_at,
            decided_at=r.decided_at,
            deadline_at=r.deadline_at,
            replay_of=r.replay_of,
        )

    def to_kafka(self) -> tuple[bytes, bytes]:
        """(key, value) for the rejects topic."""
        return self.item_id.encode(), self.model_dump_json().encode()

    @classmethod
    def from_kafka(cls, value: bytes) -> RejectCommand:
        return cls.model_validate_json(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


#: 1-bit greyscale PNG at the best compression: a 128 px simulator defect mask takes ~96 bytes
#: instead of ~194 (8-bit, level 1); decoded it is the same 0/255 image (docs in inference.redis_memory).
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 9, cv2.IMWRITE_PNG_BILEVEL, 1]


def mask_to_png(mask: np.ndarray) -> bytes:
    """bool/uint8 ``(H, W)`` → PNG bytes of a 1-bit image (decodes to uint8 0/255)."""
    img = (np.asarray(mask) > 0).astype(np.uint8) * 255
    ok, buf = cv2.imencode(".png", img, _PNG_PARAMS)
    if not ok:
        raise ValueError(f"PNG encoding of a mask of shape {img.shape} failed")
    return buf.tobytes()


def png_to_mask(data: bytes) -> np.ndarray:
    """PNG bytes → bool ``(H, W)``."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError("not a PNG mask")
    return img > 0


def encode_mask(mask: np.ndarray) -> bytes:
    """What :attr:`Result.mask_png` holds: ``b""`` when no pixel is set (most frames: nothing to
    store), else :func:`mask_to_png`. Inverse: :func:`decode_mask`."""
    return mask_to_png(mask) if np.any(mask) else b""


def decode_mask(data: bytes) -> np.ndarray | None:
    """:attr:`Result.mask_png` → bool ``(H, W)``, or None for ``b""`` (no defect pixel). The one
    reader of stored masks (the report, the CLI, tests); 8-bit PNGs of older results decode too."""
    return png_to_mask(data) if data else None


def mask_regions(mask: np.ndarray, max_boxes: int = 32) -> tuple[int, list[Box]]:
    """Defect area (pixels) and the boxes of its connected regions, largest first."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    area = int(m.sum())
    if area == 0:
        return 0, []
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    boxes = [
        Box(x=int(s[0]), y=int(s[1]), w=int(s[2]), h=int(s[3]), area=int(s[4]))
        for s in stats[1:n]
    ]
    boxes.sort(key=lambda b: b.area, reverse=True)
    return area, boxes[:max_boxes]
