"""What a camera source yields: one captured frame plus what the line knows about it.

Sources (simulator, folder, video) are iterators of :class:`CapturedFrame`. Ground truth, where a
source knows it (the simulator), travels beside the frame and never onto Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class CapturedFrame:
    """One image from one camera. ``image`` is uint8 ``(H, W)`` or ``(H, W, C)``."""

    image: np.ndarray
    line_id: str
    camera_id: str
    frame_id: str
    item_id: str
    captured_at: datetime  # timezone-aware UTC
    recipe: str
    truth: dict[str, Any] | None = field(default=None, compare=False)


class FrameSource(Protocol):
    """An iterable of captured frames; ``close()`` releases files or devices."""

    def __iter__(self) -> Iterator[CapturedFrame]: ...

    def close(self) -> None: ...
