"""Run several cameras in one process: one thread per camera, one shared idempotent producer.

Each camera thread takes frames from its :class:`~ingest.source.FrameSource`, paces them at the
target fps (``None`` = as fast as the source and the producer allow), encodes them and hands them
to the :class:`~ingest.producer.FramePublisher`. Pacing is by schedule (frame *i* is due at
``t0 + i / fps``), so small delays do not accumulate into drift; a frame more than one interval
late is counted in ``grdline_ingest_frames_behind_schedule_total`` and the schedule is re-anchored
at that frame (a stalled camera does not then burst its missed frames, as a real one would not). Setting ``stop``
(SIGINT/SIGTERM in the CLI) ends every camera after its current frame; the caller then flushes.
An error inside a camera thread stops all cameras and is re-raised by :func:`run_cameras`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest import metrics
from ingest.contract import Encoding, FrameMeta
from ingest.producer import FramePublisher
from ingest.source import CapturedFrame, FrameSource

log = logging.getLogger(__name__)


@dataclass
class CameraStats:
    frames: dict[str, int] = field(default_factory=dict)  # camera id -> frames handed to the producer
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.frames.values())


def run_cameras(
    sources: Sequence[FrameSource],
    publisher: FramePublisher,
    *,
    encoding: Encoding | str = Encoding.JPEG,
    fps: float | None = None,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
    jpeg_quality: int = 90,
    deadline_ms: int | None = None,
    on_frame: Callable[[CapturedFrame], None] | None = None,
) -> CameraStats:
    """Publish from every source until each is exhausted, ``max_frames`` each, or ``stop``.

    ``on_frame`` (called from the camera threads, after each frame is handed to the producer)
    lets the caller keep what stays off Kafka, such as the simulator's ground truth.
    """
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive or None (as fast as possible), got {fps}")
    stop = stop or threading.Event()
    enc = Encoding(encoding)
    stats = CameraStats()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def camera(source: FrameSource) -> None:
        count = 0
        camera_id = "?"
        interval = 1.0 / fps if fps else 0.0
        t0 = time.monotonic()
        try:
            for frame in source:
                camera_id = frame.camera_id
                if fps:
                    due = t0 + count * interval
                    delay = due - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        break
                    if -delay > interval:
                        # A real camera that stalls does not burst the missed frames afterwards:
                        # count the late frame and re-anchor the schedule at now.
                        metrics.FRAMES_BEHIND.labels(frame.line_id, frame.camera_id).inc()
                        t0 = time.monotonic() - count * interval
                if stop.is_set():
                    break
                meta = FrameMeta.from_captured(frame, enc, deadline_ms=deadline_ms)
                publisher.publish(frame.image, meta, jpeg_quality=jpeg_quality)
                if on_frame is not None:
                    on_frame(frame)
                metrics.FRAMES_CAPTURED.labels(frame.line_id, frame.camera_id).inc()
                count += 1
                if max_frames is not None and count >= max_frames:
                    break
        except BaseException as exc:  # re-raised by run_cameras after every thread has ended
            log.error("camera %s stopped after %d frames: %s", camera_id, count, exc)
            with lock:
                errors.append(exc)
            stop.set()
        finally:
            source.close()
            with lock:
                stats.frames[camera_id] = stats.frames.get(camera_id, 0) + count

    started = time.monotonic()
    threads = [threading.Thread(target=camera, args=(s,), name=f"camera-{i}", daemon=True)
               for i, s in enumerate(sources)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.5)  # short joins keep the main thread responsive to signals
    stats.seconds = time.monotonic() - started
    if errors:
        raise errors[0]
    return stats
