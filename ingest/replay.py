"""Replay frames onto a topic: from an archive, or a time range of a topic directly (no archive).

Each frame is republished with its original bytes, key and headers except:

* ``frame_id`` — a new id ``<original>@<run>.<loop>`` (``run`` is random per replay, ``loop`` counts
  ``--loop`` passes), so a replay never collides with the original in the sinks;
* ``replay_of`` — the original frame id (the root one when replaying a replay): the header that
  marks a frame as replayed and links it back;
* ``captured_at`` — unchanged, unless ``retime`` is set, which stamps the replay time;
* ``deadline_ms`` — **dropped** by default: a deadline is ``captured_at + deadline_ms``, so an
  original deadline on an old capture time is long past and the line's late (fail-safe) policy
  would turn every replayed frame into a reject. Frames consumed from the replay topic are decided
  into the replay namespace and never actuate (the topic decides, not the ``replay_of`` header:
  :func:`inference.decision.is_replay`), so they need no deadline. ``keep_deadline`` keeps the header; with
  ``retime`` that rebases the deadline onto the replay time (``now + deadline_ms``), which is the
  only combination where keeping it makes sense.

Destination: ``grdline replay`` writes to :data:`~ingest.topics.FRAMES_REPLAY` unless told
otherwise, and refuses the live :data:`~ingest.topics.FRAMES` topic without ``--to-live``: on the
live topic a replayed frame is a live frame (its deadline applies, its reject is sent).

Timing: frame *i* is sent at ``t0 + (ts_i - ts_0) / speed`` where ``ts`` are the original record
timestamps; ``speed=None`` sends as fast as the broker allows. A record whose headers break the
contract (no readable frame id) is republished verbatim and counted, not dropped, so a replay
reproduces bad-input incidents too.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest import metrics
from ingest.archive import ArchiveReader
from ingest.contract import decode_meta
from ingest.errors import FrameError
from ingest.producer import FramePublisher
from ingest.settings import KafkaSettings

log = logging.getLogger(__name__)

MAX_ID = 256


@dataclass(frozen=True)
class ReplayItem:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


@dataclass
class ReplayStats:
    frames: int = 0
    invalid: int = 0  # republished verbatim: headers broke the contract
    loops: int = 0
    seconds: float = 0.0


def replay_frame_id(original: str, run: str, loop: int) -> str:
    """New id linking to ``original``; stays within the id pattern's 256 characters."""
    suffix = f"@{run}.{loop}"
    if len(original) + len(suffix) > MAX_ID:
        digest = hashlib.sha256(original.encode()).hexdigest()[:16]
        original = f"{original[: MAX_ID - len(suffix) - 17]}-{digest}"
    return original + suffix


def replay_headers(
    headers: list[tuple[str, bytes]], run: str, loop: int, *, retime: bool = False,
    keep_deadline: bool = False,
) -> tuple[list[tuple[str, bytes]], str, str, str]:
    """Rewrite frame headers for a replay; returns ``(headers, new_id, line, camera)``.

    ``deadline_ms`` is dropped unless ``keep_deadline`` (see the module docstring).

    Raises :class:`~ingest.errors.FrameError` when the headers break the contract.
    """
    meta = decode_meta(headers)
    root = meta.replay_of or meta.frame_id
    new_id = replay_frame_id(root, run, loop)
    out: list[tuple[str, bytes]] = []
    for k, v in headers:
        if k == "replay_of" or (k == "deadline_ms" and not keep_deadline):
            continue
        if k == "frame_id":
            v = new_id.encode()
        elif k == "captured_at" and retime:
            v = datetime.now(UTC).isoformat(timespec="microseconds").encode()
        out.append((k, v))
    out.append(("replay_of", root.encode()))
    return out, new_id, meta.line_id, meta.camera_id


def archive_items(path) -> Callable[[], Iterator[ReplayItem]]:
    """A factory of replay items from an archive (checksums verified as it goes)."""
    reader = ArchiveReader(path)

    def items() -> Iterator[ReplayItem]:
        for entry, value in reader:
            yield ReplayItem(entry.key, value, list(entry.headers), entry.timestamp_ms)

    return items


def topic_items(
    settings: KafkaSettings, topic: str, *, start_time=None, end_time=None, start_offsets=None,
    end_offsets=None,
) -> Callable[[], Iterator[ReplayItem]]:
    """A factory of replay items read from a range of ``topic`` (resolved once, re-read per loop)."""
    from ingest.kafka_range import iter_range, resolve_range
    from ingest.recorder import range_consumer

    probe = range_consumer(settings)
    try:
        ranges = resolve_range(probe, topic, start_time=start_time, end_time=end_time,
                               start_offsets=start_offsets, end_offsets=end_offsets)
    finally:
        probe.close()

    def items() -> Iterator[ReplayItem]:
        consumer = range_consumer(settings)
        try:
            for rec in iter_range(consumer, topic, ranges):
                yield ReplayItem(rec.key, rec.value or b"", list(rec.headers), rec.timestamp)
        finally:
            consumer.close()

    return items


def replay(
    items: Callable[[], Iterable[ReplayItem]],
    publisher: FramePublisher,
    *,
    speed: float | None = 1.0,
    loop: bool = False,
    stop: threading.Event | None = None,
    retime: bool = False,
    run: str | None = None,
    max_loops: int | None = None,
    keep_deadline: bool = False,
) -> ReplayStats:
    """Republish ``items()`` through ``publisher`` with scaled original timing."""
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive or None (max), got {speed}")
    stop = stop or threading.Event()
    run = run or uuid.uuid4().hex[:8]
    stats = ReplayStats()
    started = time.monotonic()
    n = 0
    while not stop.is_set():
        t0 = time.monotonic()
        ts0: int | None = None
        sent_this_loop = 0
        for item in items():
            if ts0 is None:
                ts0 = item.timestamp_ms
            if speed is not None:
                delay = t0 + (item.timestamp_ms - ts0) / 1000.0 / speed - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            if stop.is_set():
                break
            try:
                headers, frame_id, line, camera = replay_headers(item.headers, run, n, retime=retime,
                                                                  keep_deadline=keep_deadline)
            except FrameError as exc:
                headers, line, camera = item.headers, "unknown", "unknown"
                frame_id = f"invalid-{run}-{stats.invalid}"
                stats.invalid += 1
                log.warning("replaying a record whose headers break the contract verbatim (%s)", exc)
            publisher.send(item.value, headers, key=item.key, frame_id=frame_id, line_id=line,
                           camera_id=camera)
            metrics.FRAMES_REPLAYED.labels(line, camera).inc()
            stats.frames += 1
            sent_this_loop += 1
        n += 1
        stats.loops = n
        if not loop or sent_this_loop == 0 or (max_loops is not None and n >= max_loops):
            break
    stats.seconds = time.monotonic() - started
    return stats
