"""Simulated cameras: frame sources with ground truth, at a target rate, for one or many lines.

Randomness is keyed, not sequential: item ``k`` of line ``L`` is drawn from
``SeedSequence(seed, spawn_key=(hash(L), k))`` and camera ``C``'s view of it from
``(hash(L), hash(C), k)``. So two cameras with the same ``line_id``, ``seed``, recipe and size see
the *same item sequence* (same defects, same fill levels), each with its own pose, light and noise,
whether they run in one process (:class:`SimulatedLine`) or in two.

Ground truth travels in :attr:`CapturedFrame.truth` and never onto Kafka; a scorer keeps it in a
:class:`TruthStore` and looks it up by frame id.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from ingest.simulator.config import COSMETIC, DEFECT_TYPES, GOOD
from ingest.simulator.errors import SimulatorError
from ingest.simulator.render import Renderer, get_renderer
from ingest.source import CapturedFrame, FrameSource


def _key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


class SimulatedCamera:
    """A :class:`~ingest.source.FrameSource` of simulated BFS strips with ground truth.

    ``fps`` = ``None`` renders as fast as possible; otherwise frames are triggered on a fixed
    schedule (``t0 + k / fps``, no drift). ``defect_rate`` is the share of items with a defect
    inside the ROI (a reject), ``cosmetic_rate`` the share with a defect outside it (not a
    reject). ``n_frames`` = ``None`` is endless. Frame ids are ``[run_id.]line.camera.k``, item ids
    ``[run_id.]line-item k``.
    """

    def __init__(
        self,
        line_id: str = "L1",
        camera_id: str = "cam0",
        fps: float | None = 30.0,
        defect_rate: float = 0.1,
        seed: int = 0,
        size: int = 256,
        channels: int = 1,
        recipe: str = "vials",
        *,
        cosmetic_rate: float = 0.0,
        n_frames: int | None = None,
        start_item: int = 0,
        run_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if fps is not None and fps <= 0:
            raise SimulatorError(f"camera {camera_id}: fps must be positive or None, got {fps}")
        if not (0 <= defect_rate and 0 <= cosmetic_rate and defect_rate + cosmetic_rate <= 1):
            raise SimulatorError(
                f"camera {camera_id}: defect_rate {defect_rate} + cosmetic_rate "
                f"{cosmetic_rate} must lie in [0, 1]"
            )
        self.line_id, self.camera_id, self.fps = line_id, camera_id, fps
        self.defect_rate, self.cosmetic_rate = defect_rate, cosmetic_rate
        self.seed, self.size, self.channels, self.recipe = seed, size, channels, recipe
        self.n_frames, self.start_item, self.run_id = n_frames, start_item, run_id
        self._sleep, self._monotonic = sleep, monotonic
        self._closed = False
        self._renderer: Renderer | None = None  # built lazily: constructors do no heavy work

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            key = _key(f"{self.line_id}/{self.camera_id}") & 0x7FFFFFFF
            self._renderer = get_renderer(self.recipe, self.size, self.channels, key)
        return self._renderer

    def item_id(self, k: int) -> str:
        # A run id keeps the parts of separate runs apart: reject idempotency is per item id, so
        # a second run re-using ids would have its rejects suppressed as already sent.
        prefix = f"{self.run_id}." if self.run_id else ""
        return f"{prefix}{self.line_id}-item{k:09d}"

    def frame_id(self, k: int) -> str:
        prefix = f"{self.run_id}." if self.run_id else ""
        return f"{prefix}{self.line_id}.{self.camera_id}.{k:09d}"

    def item_defect_type(self, rng: np.random.Generator) -> str:
        """Draw the defect type of an item: a reject, a cosmetic outside the ROI, or good."""
        x = rng.random()
        if x < self.defect_rate:
            return DEFECT_TYPES[int(rng.integers(len(DEFECT_TYPES)))]
        if x < self.defect_rate + self.cosmetic_rate:
            return COSMETIC
        return GOOD

    def capture(self, k: int, captured_at: datetime | None = None) -> CapturedFrame:
        """Render item ``k`` as this camera sees it (pure function of seed, line, camera, k)."""
        line = _key(self.line_id)
        item_rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(line, k)))
        view_rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(line, _key(self.camera_id), k))
        )
        r = self.renderer
        item = r.sample_item(item_rng, self.item_defect_type(item_rng))
        part = r.render(item, r.sample_view(view_rng))
        return CapturedFrame(
            image=part.image,
            line_id=self.line_id,
            camera_id=self.camera_id,
            frame_id=self.frame_id(k),
            item_id=self.item_id(k),
            captured_at=captured_at or datetime.now(UTC),
            recipe=self.recipe,
            truth=part.truth(),
        )

    def _indices(self) -> Iterator[int]:
        k = self.start_item
        while not self._closed and (self.n_frames is None or k < self.start_item + self.n_frames):
            yield k
            k += 1

    def __iter__(self) -> Iterator[CapturedFrame]:
        for tick, _, k in _schedule(self._indices(), self.fps, self._sleep, self._monotonic):
            if self._closed:
                return
            yield self.capture(k, tick)

    def close(self) -> None:
        self._closed = True


class SimulatedLine:
    """Several cameras on one line, triggered together for every item (one frame per camera).

    Yields, per item, one frame from each camera in ``camera_ids`` order, all with the same
    ``item_id`` and capture time; items come at ``fps`` (``None``: as fast as possible).
    """

    def __init__(
        self,
        line_id: str = "L1",
        camera_ids: Sequence[str] = ("cam0", "cam1"),
        fps: float | None = 10.0,
        defect_rate: float = 0.1,
        seed: int = 0,
        size: int = 256,
        channels: int = 1,
        recipe: str = "vials",
        *,
        cosmetic_rate: float = 0.0,
        n_items: int | None = None,
        run_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not camera_ids:
            raise SimulatorError(f"line {line_id}: no cameras")
        self.cameras = [
            SimulatedCamera(
                line_id,
                c,
                None,
                defect_rate,
                seed,
                size,
                channels,
                recipe,
                cosmetic_rate=cosmetic_rate,
                n_frames=n_items,
                run_id=run_id,
            )
            for c in camera_ids
        ]
        self.fps, self.n_items = fps, n_items
        self._sleep, self._monotonic = sleep, monotonic
        self._closed = False

    def __iter__(self) -> Iterator[CapturedFrame]:
        cam0 = self.cameras[0]
        for tick, _, k in _schedule(cam0._indices(), self.fps, self._sleep, self._monotonic):
            for cam in self.cameras:
                if self._closed:
                    return
                yield cam.capture(k, tick)

    def close(self) -> None:
        self._closed = True
        for cam in self.cameras:
            cam.close()


class _Interleaved:
    def __init__(self, sources: Sequence[FrameSource]) -> None:
        self.sources = list(sources)

    def __iter__(self) -> Iterator[CapturedFrame]:
        live = [iter(s) for s in self.sources]
        while live:
            for it in list(live):
                try:
                    yield next(it)
                except StopIteration:
                    live.remove(it)

    def close(self) -> None:
        for s in self.sources:
            s.close()


def interleave(sources: Iterable[FrameSource]) -> FrameSource:
    """Round-robin several sources (e.g. one :class:`SimulatedLine` per line) into one.

    Each source keeps its own pacing; with equal rates the merged stream runs at their sum.
    """
    return _Interleaved(list(sources))


def _schedule(indices: Iterable[int], fps: float | None, sleep, monotonic):
    """Yield ``(capture time, monotonic time, k)``, sleeping until ``t0 + n / fps``."""
    t0 = monotonic()
    for n, k in enumerate(indices):
        if fps is not None:
            wait = t0 + n / fps - monotonic()
            if wait > 0:
                sleep(wait)
        yield datetime.now(UTC), monotonic(), k


class TruthRecord(BaseModel):
    """Ground truth of one frame, without the pixel masks (JSON-safe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = 1
    frame_id: str
    item_id: str
    line_id: str
    camera_id: str
    defect_type: str
    defect_kind: str | None
    reject: bool
    defect_area_px: int
    defect_bbox: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (exclusive)


class TruthStore:
    """Keeps the ground truth of the last ``capacity`` frames, looked up by frame id.

    The producer ``record()``\\ s each frame before it strips the truth; the scorer reads it back
    with ``get()`` (and ``mask()`` for the pixel mask while it is still held in memory).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, TruthRecord] = OrderedDict()
        self._masks: OrderedDict[str, np.ndarray | None] = OrderedDict()

    def record(self, frame: CapturedFrame) -> TruthRecord:
        if frame.truth is None:
            raise SimulatorError(f"frame {frame.frame_id} carries no truth")
        mask = frame.truth.get("defect_mask")
        bbox = None
        if mask is not None and mask.any():
            ys, xs = np.nonzero(mask)
            bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        rec = TruthRecord(
            frame_id=frame.frame_id,
            item_id=frame.item_id,
            line_id=frame.line_id,
            camera_id=frame.camera_id,
            defect_type=frame.truth["defect_type"],
            defect_kind=frame.truth.get("defect_kind"),
            reject=bool(frame.truth["reject"]),
            defect_area_px=int(mask.sum()) if mask is not None else 0,
            defect_bbox=bbox,
        )
        self._records[frame.frame_id] = rec
        self._masks[frame.frame_id] = mask
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)
            self._masks.popitem(last=False)
        return rec

    def get(self, frame_id: str) -> TruthRecord | None:
        return self._records.get(frame_id)

    def mask(self, frame_id: str) -> np.ndarray | None:
        return self._masks.get(frame_id)

    def __len__(self) -> int:
        return len(self._records)

    def dump_jsonl(self, path: str | Path) -> None:
        """Write the records (not the masks) as JSON lines."""
        with open(path, "w", encoding="utf-8") as f:
            for rec in self._records.values():
                f.write(rec.model_dump_json() + "\n")

    @classmethod
    def load_jsonl(cls, path: str | Path) -> TruthStore:
        store = cls()
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = TruthRecord.model_validate(json.loads(line))
                except ValueError as exc:
                    raise SimulatorError(f"{path}:{n}: bad truth record: {exc}") from exc
                store._records[rec.frame_id] = rec
                store._masks[rec.frame_id] = None
        return store
