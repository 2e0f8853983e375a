"""The ingress' Kafka side: one ``KafkaConsumer`` on one dedicated thread.

kafka-python's consumer is blocking and not thread-safe, so every call to it (subscribe, poll,
pause/resume, commit, close) happens on :class:`FrameConsumer`'s thread; the Serve replica's event
loop never touches it. The thread:

1. commits, every ``commit_interval_ms``, the contiguous watermark of each partition
   (:class:`~inference.offsets.OffsetTracker`) — offsets are marked complete by the ingress only
   after the sinks confirmed, so a commit never covers a frame whose result is not stored;
2. applies backpressure: when the in-flight frames reach ``inflight_window`` it pauses every
   assigned partition (and keeps polling, so group membership stays alive) and resumes once they
   fall to ``resume_fraction`` of the window; ``max_records`` never overshoots the window;
3. polls, decodes and validates each record (``ingest.contract.decode_frame``) — decoding here keeps
   CPU work off the event loop — and hands the batch to the ingress through ``deliver``;
4. reports consumer lag (``highwater - position``) per partition about once a second.

Rebalances (ingress replicas added or removed, or a replica dies): on revoke the listener waits up
to ``revoke_drain_timeout_s`` (at most half the session timeout: the listener holds kafka-python's
IO loop, heartbeats included) for the revoked partitions' in-flight frames to complete, then drops
them from the tracker (later completions of theirs are ignored) and commits their final
watermark. Whatever was not committed is redelivered to the new owner and the
sinks are idempotent, so nothing is lost and no item is rejected twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka import ConsumerRebalanceListener

from inference.config import ServeAppConfig
from inference.offsets import OffsetTracker, Ticket
from ingest.topics import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)


@dataclass
class PolledFrame:
    """One record as the consumer hands it over: decoded (``meta``/``image``) or not (``error``)."""

    ticket: Ticket
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    received_at: float  # time.time() when poll returned it
    decode_s: float
    meta: Any = None  # ingest.contract.FrameMeta
    image: np.ndarray | None = None
    error: BaseException | None = None


class FrameConsumer(threading.Thread):
    """See the module docstring. ``deliver`` is called on this thread with each polled batch."""

    def __init__(
        self,
        cfg: ServeAppConfig,
        tracker: OffsetTracker,
        deliver: Callable[[list[PolledFrame]], None],
        on_lag: Callable[[dict[int, int]], None] | None = None,
    ):
        super().__init__(name="grdline-consumer", daemon=True)
        self._cfg = cfg
        self._tracker = tracker
        self._deliver = deliver
        self._on_lag = on_lag
        self._stop_evt = threading.Event()
        self.ready = threading.Event()  # set once subscribed
        self.error: BaseException | None = None
        self.paused = False
        self.polled = 0
        self.commits = 0
        self.rebalances = 0
        self._consumer: Any = None

    # --- life cycle -----------------------------------------------------------------------------
    def stop(self, timeout_s: float | None = None) -> None:
        self._stop_evt.set()
        self.join(timeout_s)

    def run(self) -> None:
        try:
            self._consumer = self._open()
            log.info("subscribed to %s in group %s", self._cfg.topics.frames, self._cfg.ingress.group_id)
            self.ready.set()
            self._loop()
            self._shutdown()
        except BaseException as exc:  # noqa: BLE001 - kept for check_health, which re-raises it
            log.exception("consumer thread failed")
            self.error = exc
            self.ready.set()
            if self._consumer is not None:
                self._consumer.close(autocommit=False)

    def _open(self) -> Any:
        from kafka import KafkaConsumer

        c = self._cfg.ingress
        consumer = KafkaConsumer(
            **self._cfg.kafka.client_kwargs(),
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset=c.auto_offset_reset,
            max_poll_interval_ms=c.max_poll_interval_ms,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            fetch_max_bytes=c.fetch_max_bytes,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        )
        consumer.subscribe([self._cfg.topics.frames], listener=_Listener(self))
        return consumer

    # --- main loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        c = self._cfg.ingress
        window = c.inflight_window
        resume_at = max(0, int(window * c.resume_fraction))
        next_commit = time.monotonic()
        next_lag = time.monotonic()
        unassigned_since = next_warn = time.monotonic()
        while not self._stop_evt.is_set():
            now = time.monotonic()
            if self._tracker.partitions():
                unassigned_since = now
            elif now - unassigned_since >= c.unassigned_warn_s and now >= next_warn:
                log.warning(
                    "no partitions of %s assigned for %.0f s (group %s): a stalled join, or more "
                    "ingress replicas than partitions", self._cfg.topics.frames, now - unassigned_since, c.group_id,
                )
                next_warn = now + c.unassigned_warn_s
            if now >= next_commit:
                self.commit()
                next_commit = now + c.commit_interval_ms / 1000.0
            if self._on_lag is not None and now >= next_lag:
                self._report_lag()
                next_lag = now + 1.0
            inflight = self._tracker.in_flight()
            if inflight >= window:
                self._pause()
            elif self.paused and inflight <= resume_at:
                self._resume()
            if self.paused:
                self._pause()  # partitions assigned by a rebalance start unpaused
                self._consumer.poll(timeout_ms=10, max_records=1)
                continue
            batch = self._consumer.poll(timeout_ms=c.poll_timeout_ms, max_records=window - inflight)
            if batch:
                self._hand_over(batch)

    def _hand_over(self, batch: dict[Any, list[Any]]) -> None:
        from ingest.contract import decode_frame
        from ingest.errors import FrameError

        received = time.time()
        out: list[PolledFrame] = []
        for tp, records in batch.items():
            for rec in records:
                ticket = self._tracker.add(tp, rec.offset)
                headers = [(k, v if v is not None else b"") for k, v in (rec.headers or [])]
                value = rec.value if rec.value is not None else b""
                t0 = time.perf_counter()
                meta = image = err = None
                try:
                    meta, image = decode_frame(rec.value, headers)
                except FrameError as exc:  # a bad frame is data, not a failure: dead-lettered
                    err = exc
                out.append(
                    PolledFrame(
                        ticket=ticket, topic=tp.topic, partition=tp.partition, offset=rec.offset,
                        key=rec.key, value=value, headers=headers, received_at=received,
                        decode_s=time.perf_counter() - t0, meta=meta, image=image, error=err,
                    )
                )
        self.polled += len(out)
        self._deliver(out)

    def _pause(self) -> None:
        parts = self._consumer.assignment()
        if parts:
            self._consumer.pause(*parts)
        self.paused = True

    def _resume(self) -> None:
        parts = self._consumer.paused()
        if parts:
            self._consumer.resume(*parts)
        self.paused = False

    def commit(self) -> None:
        """Commit every partition whose contiguous watermark moved (consumer thread only)."""
        from kafka.errors import CommitFailedError, RebalanceInProgressError
        from kafka.structs import OffsetAndMetadata

        offsets = self._tracker.committable()
        if not offsets:
            return
        try:
            self._consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # the group moved on: these partitions are being reassigned; their uncommitted frames
            # are redelivered to the new owner (idempotent sinks) — nothing to retry here
            log.warning("commit of %s failed during a rebalance: %r", offsets, exc)
            return
        self._tracker.mark_committed(offsets)
        self.commits += 1

    def _report_lag(self) -> None:
        lag: dict[int, int] = {}
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is None:
                continue
            lag[tp.partition] = max(0, hw - self._consumer.position(tp))
        self._on_lag(lag)

    def _shutdown(self) -> None:
        """Graceful stop: let in-flight frames finish (bounded), commit, leave the group."""
        deadline = time.monotonic() + self._cfg.ingress.revoke_drain_timeout_s
        while self._tracker.in_flight() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.commit()
        self._consumer.close(autocommit=False)


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread during ``poll``; see the module docstring."""

    def __init__(self, owner: FrameConsumer):
        self._owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        from kafka.structs import OffsetAndMetadata

        owner = self._owner
        owner.rebalances += 1
        revoked = list(revoked)
        # kafka-python runs a sync listener on the consumer's IO loop, which also sends the
        # heartbeats: waiting longer than the session timeout would get this member evicted
        # mid-rebalance (and rejoin → another rebalance). Half the session timeout at most.
        c = owner._cfg.ingress
        deadline = time.monotonic() + min(c.revoke_drain_timeout_s, c.session_timeout_ms / 2000)
        while owner._tracker.in_flight(revoked) > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        left = owner._tracker.in_flight(revoked)
        final = owner._tracker.revoke(revoked)
        if left:
            log.warning("revoked %s with %d frame(s) still in flight: they will be redelivered", revoked, left)
        if final:
            # a blocking commit is not allowed on the IO thread; the async one is sent before the
            # JoinGroup request. If it loses the race the new owner re-reads (idempotent sinks).
            owner._consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in final.items()})
        log.info("partitions revoked: %s (final commit %s)", revoked, final)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner._tracker.assign(list(assigned))
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    def on_partitions_lost(self, lost: Any) -> None:
        # evicted from the group: committing is impossible, just forget the partitions
        dropped = self._owner._tracker.revoke(list(lost))
        log.warning("partitions lost (evicted): %s; uncommitted watermarks %s dropped", lost, dropped)
