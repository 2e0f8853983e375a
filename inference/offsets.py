"""Contiguous-watermark offset tracking per partition (pure; no Kafka import).

Frames of one partition are polled in order but complete out of order (batches, replicas, sinks).
Committing the highest *completed* offset would skip frames still in flight if the replica died;
committing only the **contiguous watermark** — the lowest polled offset not yet completed (or one
past the highest polled when all completed) — guarantees every offset below the commit is done.
"Contiguous" is over the offsets actually polled, so gaps Kafka leaves in a partition (transaction
markers, compaction) never block the watermark.

Rebalances: :meth:`OffsetTracker.assign` starts a fresh *epoch* for a partition, and every
:class:`Ticket` carries the epoch it was issued in. After a revoke (and even a later re-assign of
the same partition), completions of old tickets are ignored — the new owner re-reads those frames
from the last commit, and the sinks are idempotent.

Each outstanding offset also carries its size in bytes and when it was polled, so the consumer
bounds the in-flight window in bytes as well as frames (:meth:`OffsetTracker.in_flight_bytes`) and
health can see a frame stuck in flight (:meth:`OffsetTracker.oldest_age_s`). Completed offsets
remember when they completed (and an optional label), so :meth:`OffsetTracker.mark_committed`
returns how long each waited for its commit (the ``commit`` latency stage).

Thread-safe: the consumer thread adds/commits, the event loop completes.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


class Ticket(NamedTuple):
    """Proof that ``offset`` of ``partition`` was polled in ``epoch``; pass it to ``complete``."""

    partition: Hashable
    offset: int
    epoch: int


@dataclass
class _Partition:
    epoch: int
    committed: int | None = None  # last offset committed (next to read), None = unknown
    high: int | None = None  # one past the highest offset added
    heap: list[int] = field(default_factory=list)  # outstanding offsets (some may be done)
    outstanding: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    #: offset -> (monotonic time polled, bytes) for offsets polled and not completed
    live: dict[int, tuple[float, int]] = field(default_factory=dict)
    #: offset -> label (e.g. line and camera) of offsets polled and not committed
    tags: dict[int, Hashable] = field(default_factory=dict)
    #: (offset, monotonic time completed, label) of completed offsets not yet committed (a heap)
    completed: list[tuple[int, float, Hashable]] = field(default_factory=list)

    def watermark(self) -> int | None:
        while self.heap and self.heap[0] in self.done:
            off = heapq.heappop(self.heap)
            self.done.discard(off)
            self.outstanding.discard(off)
        if self.heap:
            return self.heap[0]
        return self.high

    def in_flight(self) -> int:
        return len(self.outstanding) - len(self.done)


#: Completed-but-uncommitted offsets remembered per partition for the commit latency (a commit
#: outage drops the oldest samples beyond this, never the offsets themselves).
_MAX_COMPLETED_SAMPLES = 10_000


class OffsetTracker:
    """Per-partition watermark of completed offsets. Partitions are any hashable key
    (kafka-python ``TopicPartition`` in production)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[Hashable, _Partition] = {}
        self._epoch = 0
        self.stale_completions = 0

    def assign(self, partitions: Iterable[Hashable]) -> None:
        """Start tracking ``partitions`` in a new epoch (already tracked ones are kept)."""
        with self._lock:
            for tp in partitions:
                if tp not in self._parts:
                    self._epoch += 1
                    self._parts[tp] = _Partition(epoch=self._epoch)

    def add(self, partition: Hashable, offset: int, nbytes: int = 0, now: float | None = None) -> Ticket:
        """Record that ``offset`` (``nbytes`` of record) was polled and is now in flight."""
        with self._lock:
            p = self._parts.get(partition)
            if p is None:
                raise KeyError(f"partition {partition!r} is not assigned; cannot track offset {offset}")
            if p.committed is None:
                p.committed = offset  # where this assignment started: nothing to commit yet
            if offset in p.outstanding:
                p.done.discard(offset)  # polled again (seek back): in flight again
            else:
                p.outstanding.add(offset)
                heapq.heappush(p.heap, offset)
            if p.high is None or offset + 1 > p.high:
                p.high = offset + 1
            p.live[offset] = (time.monotonic() if now is None else now, nbytes)
            return Ticket(partition, offset, p.epoch)

    def complete(self, ticket: Ticket) -> bool:
        """Mark a polled offset done. False (and ignored) when its partition was revoked since."""
        with self._lock:
            p = self._parts.get(ticket.partition)
            if p is None or p.epoch != ticket.epoch or ticket.offset not in p.outstanding:
                self.stale_completions += 1
                return False
            p.done.add(ticket.offset)
            p.live.pop(ticket.offset, None)
            heapq.heappush(p.completed, (ticket.offset, time.monotonic(), p.tags.pop(ticket.offset, None)))
            if len(p.completed) > _MAX_COMPLETED_SAMPLES:
                p.completed.pop()  # some sample, not the lowest offset: the heap stays a heap
            return True

    def label(self, ticket: Ticket, tag: Hashable) -> None:
        """Attach ``tag`` to an in-flight offset; :meth:`mark_committed` returns it with its wait."""
        with self._lock:
            p = self._parts.get(ticket.partition)
            if p is not None and p.epoch == ticket.epoch and ticket.offset in p.live:
                p.tags[ticket.offset] = tag

    def is_current(self, ticket: Ticket) -> bool:
        """Whether ``ticket``'s partition is still assigned in the epoch it was issued in."""
        with self._lock:
            p = self._parts.get(ticket.partition)
            return p is not None and p.epoch == ticket.epoch

    def committable(self) -> dict[Hashable, int]:
        """Partitions whose watermark moved past the last commit: ``{partition: next offset}``."""
        with self._lock:
            out = {}
            for tp, p in self._parts.items():
                wm = p.watermark()
                if wm is not None and (p.committed is None or wm > p.committed):
                    out[tp] = wm
            return out

    def mark_committed(self, offsets: dict[Hashable, int]) -> list[tuple[Hashable, float]]:
        """Record a successful commit (ignores partitions revoked meanwhile). Returns ``(label,
        seconds from completion to this commit)`` of every completed offset the commit covered."""
        now = time.monotonic()
        waits: list[tuple[Hashable, float]] = []
        with self._lock:
            for tp, off in offsets.items():
                p = self._parts.get(tp)
                if p is not None and (p.committed is None or off > p.committed):
                    p.committed = off
                    while p.completed and p.completed[0][0] < off:
                        _, t, tag = heapq.heappop(p.completed)
                        waits.append((tag, now - t))
        return waits

    def revoke(self, partitions: Iterable[Hashable]) -> dict[Hashable, int]:
        """Stop tracking ``partitions``; return the final watermark of those that moved past their
        last commit (the caller commits them before giving the partitions up)."""
        with self._lock:
            final = {}
            for tp in partitions:
                p = self._parts.pop(tp, None)
                if p is None:
                    continue
                wm = p.watermark()
                if wm is not None and (p.committed is None or wm > p.committed):
                    final[tp] = wm
            return final

    def in_flight(self, partitions: Iterable[Hashable] | None = None) -> int:
        """Offsets polled and not completed (all partitions, or only ``partitions``)."""
        with self._lock:
            keys = self._parts.keys() if partitions is None else partitions
            return sum(self._parts[tp].in_flight() for tp in keys if tp in self._parts)

    def watermarks(self, partitions: Iterable[Hashable]) -> dict[Hashable, int]:
        """The next offset to read again for each tracked partition: its lowest offset not
        completed (or one past the highest polled). Where a re-assigned partition is sought back."""
        with self._lock:
            out = {}
            for tp in partitions:
                p = self._parts.get(tp)
                if p is None:
                    continue
                wm = p.watermark()
                if wm is None:
                    wm = p.committed
                if wm is not None:
                    out[tp] = wm
            return out

    def in_flight_bytes(self) -> int:
        """Bytes of the records polled and not completed (every partition)."""
        with self._lock:
            return sum(n for p in self._parts.values() for _, n in p.live.values())

    def oldest_age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest frame still in flight was polled (0 when none)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            oldest = min((t for p in self._parts.values() for t, _ in p.live.values()), default=None)
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def partitions(self) -> list[Hashable]:
        with self._lock:
            return list(self._parts)
