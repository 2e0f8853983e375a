"""Helpers for the ingest integration tests: read a whole topic back, build frames in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from ingest.source import CapturedFrame

from ..conftest import read_topic_records


@pytest.fixture
def read_topic(kafka_settings) -> Callable[..., list]:
    def read(topic: str, expected: int, timeout_s: float = 60.0, settle_s: float = 1.0) -> list:
        return read_topic_records(kafka_settings, topic, expected, timeout_s, settle_s)

    return read


class ListSource:
    """A camera source of synthetic frames (a FrameSource): ``n`` frames, seeded, ids ``cam-000001``."""

    def __init__(self, camera_id: str, n: int, size: int = 32, channels: int = 1, line_id: str = "L1",
                 seed: int = 0) -> None:
        self.camera_id, self.n, self.size, self.channels, self.line_id = camera_id, n, size, channels, line_id
        self.rng = np.random.default_rng(seed)
        self.closed = False

    def __iter__(self) -> Iterator[CapturedFrame]:
        shape = (self.size, self.size) if self.channels == 1 else (self.size, self.size, 3)
        for i in range(self.n):
            yield CapturedFrame(
                image=self.rng.integers(0, 256, shape, dtype=np.uint8), line_id=self.line_id,
                camera_id=self.camera_id, frame_id=f"{self.camera_id}-{i:06d}", item_id=f"item-{i:06d}",
                captured_at=datetime.now(UTC), recipe="vials",
            )

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def list_source() -> type[ListSource]:
    return ListSource


def spread_cameras(n: int, partitions: int) -> list[str]:
    """``n`` camera ids whose keys hash (Kafka's murmur2) to distinct partitions where possible:
    ``cam0..cam6`` happen to share one partition of four, which would leave partitions idle."""
    from kafka.partitioner.default import murmur2

    chosen: dict[int, str] = {}
    k = 0
    while len(chosen) < min(n, partitions):
        cam = f"cam{k}"
        chosen.setdefault((murmur2(cam.encode()) & 0x7FFFFFFF) % partitions, cam)
        k += 1
    ids = list(chosen.values())
    return ids + [f"cam-extra{i}" for i in range(n - len(ids))]


@pytest.fixture
def cameras() -> Callable[[int, int], list[str]]:
    return spread_cameras
