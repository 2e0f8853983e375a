"""Camera sources besides the simulator: a folder of images and a video file.

Both are :class:`~ingest.source.FrameSource` s yielding :class:`~ingest.source.CapturedFrame` with
``captured_at`` = the moment the frame is taken from the source. Frame ids are
``<camera>-<run>-<seq>`` where ``run`` is a random token per source instance, so two runs (or two
processes) never reuse an id; each frame is its own item (``item-<run>-<seq>``). Images are
``uint8`` ``(H, W)`` for ``channels=1`` or RGB ``(H, W, 3)`` for ``channels=3``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ingest.errors import IngestError
from ingest.source import CapturedFrame, FrameSource

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


class _Ids:
    def __init__(self, line_id: str, camera_id: str, recipe: str) -> None:
        self.line_id, self.camera_id, self.recipe = line_id, camera_id, recipe
        self.run = uuid.uuid4().hex[:8]
        self.seq = 0

    def frame(self, image: np.ndarray) -> CapturedFrame:
        self.seq += 1
        return CapturedFrame(
            image=image,
            line_id=self.line_id,
            camera_id=self.camera_id,
            frame_id=f"{self.camera_id}-{self.run}-{self.seq:09d}",
            item_id=f"item-{self.run}-{self.seq:09d}",
            captured_at=datetime.now(UTC),
            recipe=self.recipe,
        )


def _to_channels(image: np.ndarray, channels: int, where: str) -> np.ndarray:
    """BGR/BGRA/gray uint8 from OpenCV to the contract's gray ``(H, W)`` or RGB ``(H, W, 3)``."""
    import cv2

    if image.dtype != np.uint8:
        raise IngestError(f"{where}: {image.dtype} image; sources deliver 8-bit images")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if channels == 1:
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class _FileSource:
    """What the folder and video sources share: a path, the channel count, looping, frame ids."""

    def __init__(
        self, path: str | Path, *, line_id: str, camera_id: str, recipe: str = "default",
        channels: int = 1, loop: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise IngestError(f"channels must be 1 or 3, got {channels}")
        self.path = Path(path)
        self.channels = channels
        self.loop = loop
        self._ids = _Ids(line_id, camera_id, recipe)


class FolderSource(_FileSource):
    """Images of a folder (recursively, sorted by path), once or looping."""

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            raise IngestError(f"folder source {self.path}: not a directory")
        files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise IngestError(f"folder source {self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files

    def __iter__(self) -> Iterator[CapturedFrame]:
        import cv2

        files = self.files()
        while True:
            for f in files:
                image = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
                if image is None:
                    raise IngestError(f"folder source: cannot read image {f}")
                yield self._ids.frame(_to_channels(image, self.channels, str(f)))
            if not self.loop:
                return

    def close(self) -> None:
        """Nothing is held open between frames."""


class VideoSource(_FileSource):
    """Frames of a video file read with ``cv2.VideoCapture``, once or looping."""

    def __init__(self, path: str | Path, **kw) -> None:
        super().__init__(path, **kw)
        self._cap = None

    def _open(self):
        import cv2

        if not self.path.is_file():
            raise IngestError(f"video source {self.path}: no such file")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise IngestError(f"video source {self.path}: OpenCV cannot open it")
        return cap

    @property
    def native_fps(self) -> float | None:
        """The frame rate stored in the file, if any."""
        import cv2

        cap = self._open()
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS))
        finally:
            cap.release()
        return fps if fps > 0 else None

    def __iter__(self) -> Iterator[CapturedFrame]:
        while True:
            self._cap = self._open()
            got = 0
            try:
                while True:
                    ok, image = self._cap.read()
                    if not ok:
                        break
                    got += 1
                    yield self._ids.frame(_to_channels(image, self.channels, f"{self.path} frame {got}"))
            finally:
                self.close()
            if got == 0:
                raise IngestError(f"video source {self.path}: no frame could be decoded")
            if not self.loop:
                return

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def make_source(kind: str, *, line_id: str, camera_id: str, recipe: str, channels: int = 1,
                path: str | Path | None = None, loop: bool = False, size: int = 256,
                defect_rate: float = 0.1, seed: int = 0, run_id: str | None = None) -> FrameSource:
    """Build one camera's source: ``simulator``, ``folder`` or ``video``.

    Simulated cameras of one line share ``seed`` so that they see the same items (the simulator
    keys items by line and seed); ``run_id`` makes their frame ids unique across runs.
    """
    if kind == "simulator":
        from ingest.simulator import SimulatedCamera

        # fps=None: the camera runner paces the frames, the simulator renders as fast as asked.
        return SimulatedCamera(line_id=line_id, camera_id=camera_id, fps=None, defect_rate=defect_rate,
                               seed=seed, size=size, channels=channels, recipe=recipe,
                               run_id=run_id or uuid.uuid4().hex[:8])
    if path is None:
        raise IngestError(f"a {kind} source needs a path")
    if kind == "folder":
        return FolderSource(path, line_id=line_id, camera_id=camera_id, recipe=recipe,
                            channels=channels, loop=loop)
    if kind == "video":
        return VideoSource(path, line_id=line_id, camera_id=camera_id, recipe=recipe,
                           channels=channels, loop=loop)
    raise IngestError(f"unknown source {kind!r}; choose simulator, folder or video")
