"""Read a range of a topic: offsets from times (``offsets_for_times``) or given offsets, and a
merged iterator that yields the records of all partitions in timestamp order while keeping each
partition's own order (so one camera's frames stay in order).

Ranges are half-open per partition: ``[start, end)``. A start time maps to the first offset whose
timestamp is ``>= start`` (the end of the partition if none); an end time likewise, exclusive; no
end means the end offsets at the moment the range is resolved (records arriving later are not
included, so a recording or replay of a live topic terminates).
"""

from __future__ import annotations

import heapq
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ingest.errors import IngestError


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


_REL = re.compile(r"^-(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-30T07:00:00Z`` (naive = UTC), ``now``, ``-10m``/``-2h``/``-30s``, or epoch ms."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now
    m = _REL.match(text)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise IngestError(f"cannot read time {text!r}: use ISO 8601, 'now', -10m or epoch ms") from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def parse_offsets(text: str | None) -> int | dict[int, int] | None:
    """``"100"`` (every partition) or ``"0:100,1:250"`` (per partition)."""
    if text is None:
        return None
    text = text.strip()
    try:
        if ":" not in text:
            return int(text)
        out = {}
        for part in text.split(","):
            p, o = part.split(":")
            out[int(p)] = int(o)
        return out
    except ValueError as exc:
        raise IngestError(f"cannot read offsets {text!r}: use N or P:N,P:N") from exc


def resolve_range(
    consumer,
    topic: str,
    *,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    start_offsets: int | Mapping[int, int] | None = None,
    end_offsets: int | Mapping[int, int] | None = None,
    partitions: list[int] | None = None,
) -> list[PartitionRange]:
    """The ``[start, end)`` offsets per partition of ``topic`` for a time or offset range."""
    from kafka import TopicPartition

    known = consumer.partitions_for_topic(topic)
    if not known:
        raise IngestError(f"topic {topic!r} does not exist or has no partitions")
    parts = sorted(partitions if partitions is not None else known)
    missing = set(parts) - set(known)
    if missing:
        raise IngestError(f"topic {topic!r} has no partition(s) {sorted(missing)}")
    tps = [TopicPartition(topic, p) for p in parts]
    first = consumer.beginning_offsets(tps)
    last = consumer.end_offsets(tps)

    def by_time(when: datetime) -> dict[int, int]:
        found = consumer.offsets_for_times({tp: int(when.timestamp() * 1000) for tp in tps})
        return {tp.partition: (found[tp].offset if found.get(tp) is not None else last[tp]) for tp in tps}

    def given(spec: int | Mapping[int, int], default: dict[int, int]) -> dict[int, int]:
        if isinstance(spec, int):
            return {p: spec for p in parts}
        return {p: spec.get(p, default[p]) for p in parts}

    lo = {tp.partition: first[tp] for tp in tps}
    hi = {tp.partition: last[tp] for tp in tps}
    starts = given(start_offsets, lo) if start_offsets is not None else (by_time(start_time) if start_time else lo)
    ends = given(end_offsets, hi) if end_offsets is not None else (by_time(end_time) if end_time else hi)
    return [
        PartitionRange(p, min(max(starts[p], lo[p]), hi[p]), min(max(ends[p], lo[p]), hi[p]))
        for p in parts
    ]


def iter_range(
    consumer,
    topic: str,
    ranges: list[PartitionRange],
    *,
    timeout_s: float = 30.0,
    max_buffered: int = 2000,
) -> Iterator:
    """Yield the ``ConsumerRecord`` s of ``ranges``, merged by timestamp, each partition in order.

    The consumer must have no group (it is assigned the partitions here). At most
    ``max_buffered`` records per partition are held (further fetching of a partition is paused).
    Raises :class:`IngestError` if the broker delivers nothing for ``timeout_s`` while records of
    the range are still expected.
    """
    from kafka import TopicPartition

    todo = [r for r in ranges if r.size > 0]
    tps = {r.partition: TopicPartition(topic, r.partition) for r in todo}
    end = {r.partition: r.end for r in todo}
    if not todo:
        return
    consumer.assign(list(tps.values()))
    for r in todo:
        consumer.seek(tps[r.partition], r.start)
    buffers: dict[int, deque] = {p: deque() for p in tps}
    active = set(tps)  # partitions whose fetching is not finished
    deadline = time.monotonic() + timeout_s
    while active or any(buffers.values()):
        starving = [p for p in active if not buffers[p]]
        if starving:
            for p in active:
                if len(buffers[p]) >= max_buffered:
                    consumer.pause(tps[p])
                else:
                    consumer.resume(tps[p])
            got = consumer.poll(timeout_ms=200)
            if got:
                deadline = time.monotonic() + timeout_s
            for tp, records in got.items():
                for rec in records:
                    if rec.offset < end[tp.partition]:
                        buffers[tp.partition].append(rec)
            for p in list(active):
                if consumer.position(tps[p]) >= end[p]:
                    active.discard(p)
                    consumer.pause(tps[p])
            if time.monotonic() > deadline:
                raise IngestError(
                    f"{topic}: nothing delivered for {timeout_s}s while reading partitions "
                    f"{sorted(active)} (positions {[consumer.position(tps[p]) for p in sorted(active)]}, "
                    f"ends {[end[p] for p in sorted(active)]})"
                )
            continue
        # every partition still fetching has a head: emit the earliest head
        heads = [(buffers[p][0].timestamp, p) for p in buffers if buffers[p]]
        _, p = heapq.nsmallest(1, heads)[0]
        yield buffers[p].popleft()
