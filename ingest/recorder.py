"""Record a range of a topic into an archive (see :mod:`ingest.archive` for the format).

The range is a time range (``offsets_for_times``) or an offset range, resolved once at the start
(:mod:`ingest.kafka_range`); records are written in timestamp order across partitions, each
partition in its own order. Every record is kept, including ones that break the frame contract
(so a recording can reproduce a bad-input incident). A tqdm progress bar counts frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ingest import metrics
from ingest.archive import ArchiveWriter
from ingest.kafka_range import iter_range, resolve_range
from ingest.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Consumer fetch sizes for image-sized records.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
}


@dataclass(frozen=True)
class RecordSummary:
    path: Path
    frames: int
    bytes: int
    ranges: list[dict[str, int]]


def range_consumer(settings: KafkaSettings, **kwargs: Any):
    """A group-less consumer for reading ranges (nothing is committed)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(**settings.client_kwargs(), group_id=None, enable_auto_commit=False,
                         **{**CONSUMER_DEFAULTS, **kwargs})


def record(
    topic: str,
    out: str | Path,
    *,
    settings: KafkaSettings | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    start_offsets: int | dict[int, int] | None = None,
    end_offsets: int | dict[int, int] | None = None,
    progress: bool = True,
    timeout_s: float = 30.0,
) -> RecordSummary:
    """Write the records of ``topic`` in the range to the archive ``out``."""
    from tqdm import tqdm

    settings = settings or KafkaSettings()
    consumer = range_consumer(settings)
    try:
        ranges = resolve_range(consumer, topic, start_time=start_time, end_time=end_time,
                               start_offsets=start_offsets, end_offsets=end_offsets)
        source = {
            "bootstrap_servers": settings.bootstrap_servers,
            "start_time": start_time.isoformat() if start_time else None,
            "end_time": end_time.isoformat() if end_time else None,
            "ranges": [{"partition": r.partition, "start": r.start, "end": r.end} for r in ranges],
        }
        total = sum(r.size for r in ranges)
        with ArchiveWriter(out, topic=topic, source=source) as writer, \
                tqdm(total=total, unit="frame", desc=f"record {topic}", disable=not progress) as bar:
            for rec in iter_range(consumer, topic, ranges, timeout_s=timeout_s):
                entry = writer.add(value=rec.value, key=rec.key, headers=rec.headers, topic=rec.topic,
                                   partition=rec.partition, offset=rec.offset,
                                   timestamp_ms=rec.timestamp, timestamp_type=rec.timestamp_type)
                metrics.FRAMES_RECORDED.labels(entry.header("line_id") or "unknown",
                                               entry.header("camera_id") or "unknown").inc()
                bar.update(1)
        log.info("recorded %d frames (%d bytes) of %s into %s", writer.count, writer.nbytes, topic, out)
        return RecordSummary(Path(out), writer.count, writer.nbytes, source["ranges"])
    finally:
        consumer.close()
