"""The ingress' Kafka side: one ``KafkaConsumer`` on one dedicated thread.

kafka-python's consumer is blocking and not thread-safe, so every call to it (subscribe, poll,
pause/resume, commit, close) happens on :class:`FrameConsumer`'s thread; the Serve replica's event
loop never touches it. The thread:

1. commits, every ``commit_interval_ms`` and asynchronously (one commit in flight), the
   contiguous watermark of each partition (:class:`~inference.offsets.OffsetTracker`) — offsets
   are marked complete by the ingress only after the sinks confirmed, so a commit never covers a
   frame whose result is not stored;
2. applies backpressure: when the in-flight frames reach ``inflight_window`` (or their bytes
   ``inflight_max_bytes``) it pauses every assigned partition (and keeps polling, so group
   membership stays alive) and resumes once they fall to ``resume_fraction`` of the window;
   ``max_records`` never overshoots the frame window;
3. polls, decodes and validates each record (``ingest.contract.decode_frame``) — decoding here keeps
   CPU work off the event loop — looks up which frames already have a result (redelivery), and
   hands the batch to the ingress through ``deliver``;
4. reports consumer lag (``highwater - position``) per partition about once a second.

Nothing a record carries stops this thread: any exception while reading or decoding one record
makes it a :class:`PolledFrame` with ``error`` set (dead-lettered by the decision core). A header key
that is not UTF-8 reaches this thread as text with lone surrogates (:mod:`inference.kafka_compat`)
and is dead-lettered as an invalid header. An error raised by ``poll()`` itself while kafka-python
parses a record (a corrupt batch) is located through the fetcher's in-line partition records (the partition and the
``next_fetch_offset`` it failed at — kafka-python keeps no public handle on it); the consumer seeks
past that offset and hands over a stub frame (no value, no headers) carrying the error, so the bad
record is dead-lettered and the partition goes on. A poll error that cannot be located (connection
trouble, a broker restart) is retried with backoff. Commit errors (a broker restart, a rebalance)
are logged and retried at the next interval, never fatal; the loop records when it last went round
(``last_loop``) for the health check.

Rebalances (ingress replicas added or removed, or a replica dies): on revoke the listener waits up
to ``revoke_drain_timeout_s`` (at most half the session timeout: the listener holds kafka-python's
IO loop, heartbeats included) for the revoked partitions' in-flight frames to complete, then drops
them from the tracker (later completions of theirs are ignored) and commits their final
watermark. Whatever was not committed is redelivered to the new owner and the sinks are
idempotent. When a partition with dropped frames is assigned back to this same member,
kafka-python keeps its fetch position (past the dropped frames), so the listener seeks it back to
the watermark: nothing is skipped. Shutdown drains (bounded) and commits only the contiguous
watermark, so what it dropped is re-read by the next owner.
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
    #: the record's Kafka timestamp (time.time() scale; None when the record has none)
    record_ts: float | None = None
    #: time.time() when the event loop took the frame over (set by the ingress)
    accepted_at: float = 0.0
    meta: Any = None  # ingest.contract.FrameMeta
    image: np.ndarray | None = None
    error: BaseException | None = None
    existing: Any = None  # inference.contracts.Result already stored for this frame (redelivery)


#: Consecutive failed loop iterations (each followed by a backoff) before the thread gives up and
#: health turns red so Serve replaces the replica.
_MAX_LOOP_ERRORS = 60


def locate_poll_failure(consumer: Any) -> tuple[Any, int] | None:
    """The (partition, offset) at which kafka-python's fetcher failed to parse a record, or None.

    kafka-python 3 parses records lazily inside ``poll``; when parsing raises, its
    ``_next_partition_records`` is left on the failing partition with ``next_fetch_offset`` at the
    record that failed (the one after the last record returned) and the consumer's position there."""
    fetcher = getattr(consumer, "_fetcher", None)
    part = getattr(fetcher, "_next_partition_records", None)
    if part is None:
        meta = getattr(fetcher, "_next_in_line_exception_metadata", None)
        if meta is not None and meta.partition is not None and meta.fetched_offset is not None:
            return meta.partition, int(meta.fetched_offset)
        return None
    tp, off = getattr(part, "topic_partition", None), getattr(part, "next_fetch_offset", None)
    if tp is None or off is None:
        return None
    try:
        position = consumer.position(tp)
    except Exception:  # noqa: BLE001 - cannot confirm: do not skip anything
        return None
    return (tp, int(off)) if position == off else None


class FrameConsumer(threading.Thread):
    """See the module docstring. ``deliver`` is called on this thread with each polled batch."""

    def __init__(
        self,
        cfg: ServeAppConfig,
        tracker: OffsetTracker,
        deliver: Callable[[list[PolledFrame]], None],
        on_lag: Callable[[dict[int, int]], None] | None = None,
        lookup: Callable[[list[tuple[str, str]]], dict[tuple[str, str], Any]] | None = None,
        prefix_of: Callable[[str], str] | None = None,
        on_commit: Callable[[list[tuple[Any, float]]], None] | None = None,
    ):
        """``on_commit`` gets ``(label, seconds waited)`` of the offsets each commit covered
        (labels: ``(line_id, camera_id)`` of the decoded frames, else None). The kafka-python
        patches are applied here, in the replica's constructor: one that does not apply to the
        installed kafka-python fails the replica at start-up (:class:`~inference.kafka_compat.KafkaPatchError`)."""
        from inference.kafka_compat import apply_patches

        apply_patches()
        super().__init__(name="grdline-consumer", daemon=True)
        self._on_commit = on_commit
        self._cfg = cfg
        self._tracker = tracker
        self._deliver = deliver
        self._on_lag = on_lag
        self._lookup = lookup
        self._prefix_of = prefix_of
        self._seek_back: dict[Any, int] = {}
        self.last_loop = time.monotonic()
        self.last_poll_ok = time.monotonic()
        self.poll_errors = 0
        self.skipped = 0
        self.commit_errors = 0
        self._stop_evt = threading.Event()
        self.ready = threading.Event()  # set once subscribed
        self.error: BaseException | None = None
        self.paused = False
        self.polled = 0
        self.commits = 0
        self._commit_sent: tuple[int, float] | None = None  # the async commit in flight: (seq, sent at)
        self._commit_seq = 0
        self.rebalances = 0
        self._consumer: Any = None
        # --- what the health check reads (inference.health.ConsumerState) ---
        #: monotonic time this thread started trying to create its Kafka client (None before)
        self.connecting_since: float | None = None
        #: the last error creating the client while Kafka was unreachable (None once connected)
        self.connect_error: BaseException | None = None
        self.connect_attempts = 0
        #: monotonic time since which no partition is held (None while some are)
        self.unassigned_since: float | None = None
        #: partitions of the frames topic in the client's cached cluster metadata (0: the topic is
        #: not in it; None: no metadata read yet), refreshed while no partition is held
        self.topic_partitions: int | None = None

    def is_connected(self) -> bool:
        """The client is created and subscribed (or the thread failed: ``error`` says so)."""
        return self.ready.is_set()

    # --- life cycle -----------------------------------------------------------------------------
    def stop(self, timeout_s: float | None = None) -> None:
        self._stop_evt.set()
        self.join(timeout_s)

    def run(self) -> None:
        try:
            self._consumer = self._connect()
            if self._consumer is None:
                return  # stopped before Kafka could be reached
            log.info("subscribed to %s in group %s", self._cfg.topics.frames, self._cfg.ingress.group_id)
            self.last_poll_ok = time.monotonic()
            self.ready.set()
            self._loop()
            self._shutdown()
        except BaseException as exc:  # noqa: BLE001 - kept for check_health, which re-raises it
            log.exception("consumer thread failed")
            self.error = exc
            self.ready.set()
            if self._consumer is not None:
                self._consumer.close(autocommit=False)

    def _connect(self) -> Any:
        """:meth:`_open`, retried with backoff (doubling up to ``ingress.connect_backoff_max_s``)
        while Kafka cannot be reached — a cold start in any order: the replica starts, stays
        healthy for ``ingress.connect_grace_s`` and consumes as soon as the broker answers. Errors
        that are not Kafka's or the network's (a bug, a wrong argument) are not retried. None when
        stopped first."""
        from kafka.errors import KafkaError

        self.connecting_since = time.monotonic()
        delay = 0.5
        while not self._stop_evt.is_set():
            try:
                consumer = self._open()
            except (KafkaError, OSError) as exc:
                self.connect_error = exc
                self.connect_attempts += 1
                log.warning("Kafka not reachable for %.0f s (attempt %d): %r; retrying in %.1f s",
                            time.monotonic() - self.connecting_since, self.connect_attempts, exc, delay)
                self._stop_evt.wait(delay)
                delay = min(delay * 2, self._cfg.ingress.connect_backoff_max_s)
                continue
            self.connect_error = None
            return consumer
        return None

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
            reconnect_backoff_ms=50,
            reconnect_backoff_max_ms=c.reconnect_backoff_max_ms,
        )
        try:
            consumer.subscribe([self._cfg.topics.frames], listener=_Listener(self))
            self._know_partitions(consumer)
        except BaseException:
            consumer.close(autocommit=False)
            raise
        return consumer

    def _know_partitions(self, consumer: Any) -> None:
        """Fetch the cluster's metadata once subscribed, before the first ``poll`` joins the group.
        A leader that joins without the frames topic's partitions in its metadata snapshot assigns
        from a stale view and rebalances the whole group again when the metadata arrives, revoking
        partitions with frames in flight (see :mod:`inference.kafka_compat` for what that second
        rebalance could do). With it, a fresh ingress joins with one rebalance."""
        topic = self._cfg.topics.frames
        try:
            known = topic in consumer.topics()
        except Exception as exc:  # noqa: BLE001 - the join fetches the metadata itself, one rebalance later
            log.warning("metadata of %s not fetched before joining (%r): the group rebalances once more", topic, exc)
            return
        if not known:
            log.warning("topic %s does not exist yet: the group waits for it", topic)

    def _cached_partitions(self) -> int | None:
        """Partitions of the frames topic in the client's cluster metadata, which kafka-python
        refreshes in the background for the subscribed topic — read from memory, never a request
        (``partitions_for_topic`` would block on a request without a time-out when the topic is
        unknown). 0 when metadata was read and the topic is not in it (misnamed or deleted); None
        when no metadata was read yet or kafka-python keeps it elsewhere (health then stays
        green on this count: see :mod:`inference.health`)."""
        cluster = getattr(self._consumer, "_cluster", None)
        if cluster is None or not getattr(cluster, "_last_successful_refresh_ms", 0):
            return None
        parts = cluster.partitions_for_topic(self._cfg.topics.frames)
        return len(parts) if parts else 0

    # --- main loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        errors = 0
        state = {"next_commit": time.monotonic(), "next_lag": time.monotonic(),
                 "unassigned_since": time.monotonic(), "next_warn": time.monotonic()}
        while not self._stop_evt.is_set():
            self.last_loop = time.monotonic()
            try:
                self._step(state)
                errors = 0
            except Exception:  # noqa: BLE001 - one bad iteration never kills the line
                errors += 1
                log.exception("consumer loop iteration failed (%d in a row)", errors)
                if errors >= _MAX_LOOP_ERRORS:
                    raise
                self._stop_evt.wait(min(0.1 * errors, 2.0))

    def _step(self, state: dict[str, float]) -> None:
        c = self._cfg.ingress
        window = c.inflight_window
        resume_at = max(0, int(window * c.resume_fraction))
        resume_bytes = int(c.inflight_max_bytes * c.resume_fraction)
        now = time.monotonic()
        if self._tracker.partitions():
            state["unassigned_since"] = now
            self.unassigned_since = None
        else:
            self.unassigned_since = state["unassigned_since"]
            self.topic_partitions = self._cached_partitions()
        if (self.unassigned_since is not None and now - self.unassigned_since >= c.unassigned_warn_s
                and now >= state["next_warn"]):
            log.warning(
                "no partitions of %s assigned for %.0f s (group %s; the topic has %s partition(s) in the "
                "metadata): a stalled join, a missing topic, or more ingress replicas than partitions",
                self._cfg.topics.frames, now - self.unassigned_since, c.group_id, self.topic_partitions,
            )
            state["next_warn"] = now + c.unassigned_warn_s
        if now >= state["next_commit"]:
            state["next_commit"] = now + c.commit_interval_ms / 1000.0
            self.commit()
        if self._on_lag is not None and now >= state["next_lag"]:
            state["next_lag"] = now + 1.0
            self._report_lag()
        inflight = self._tracker.in_flight()
        nbytes = self._tracker.in_flight_bytes()
        if inflight >= window or nbytes >= c.inflight_max_bytes:
            self._pause()
        elif self.paused and inflight <= resume_at and nbytes <= resume_bytes:
            self._resume()
        if self.paused:
            self._pause()  # partitions assigned by a rebalance start unpaused
            self._poll(10, 1)
            return
        self._poll(c.poll_timeout_ms, window - inflight)

    def _poll(self, timeout_ms: int, max_records: int) -> None:
        """One ``poll``; a record kafka-python cannot parse is skipped and handed over as a stub."""
        from kafka.errors import CorruptRecordError, KafkaError

        try:
            batch = self._consumer.poll(timeout_ms=timeout_ms, max_records=max(1, max_records))
        except Exception as exc:  # noqa: BLE001 - see the module doc
            self.poll_errors += 1
            # a record the client cannot parse raises a plain Python error (UnicodeDecodeError,
            # ValueError...) or CorruptRecordError; other Kafka errors are the connection's
            parse_error = isinstance(exc, CorruptRecordError) or not isinstance(exc, KafkaError)
            where = locate_poll_failure(self._consumer) if parse_error else None
            if where is None:
                log.warning("poll failed (%r); retrying", exc)
                self._stop_evt.wait(min(0.05 * self.poll_errors, 1.0))
                return
            tp, offset = where
            log.error("record %s[%d]@%d cannot be read by the client (%r): dead-lettered, skipped",
                      tp.topic, tp.partition, offset, exc)
            self._consumer.seek(tp, offset + 1)
            self.skipped += 1
            ticket = self._tracker.add(tp, offset)
            self._deliver([PolledFrame(
                ticket=ticket, topic=tp.topic, partition=tp.partition, offset=offset, key=None, value=b"",
                headers=[], received_at=time.time(), decode_s=0.0,
                error=_UnreadableRecord(f"record unreadable by the Kafka client: {type(exc).__name__}: {exc}"),
            )])
            return
        self.last_poll_ok = time.monotonic()
        if batch:
            self._hand_over(batch)

    def _hand_over(self, batch: dict[Any, list[Any]]) -> None:
        from inference.decision import is_replay
        from inference.kafka_compat import has_undecodable_key, printable_headers
        from ingest.contract import decode_frame
        from ingest.errors import FrameError, InvalidHeaderError

        received = time.time()
        out: list[PolledFrame] = []
        for tp, records in batch.items():
            for rec in records:
                value = rec.value if isinstance(rec.value, bytes | bytearray) else b""
                ticket = self._tracker.add(tp, rec.offset, len(value))
                t0 = time.perf_counter()
                meta = image = err = None
                headers: list[tuple[str, bytes]] = []
                try:
                    headers = [(str(k), bytes(v) if v is not None else b"") for k, v in (rec.headers or [])]
                    bad_key = has_undecodable_key(headers)
                    if bad_key is not None:
                        headers = printable_headers(headers)
                        raise InvalidHeaderError(bad_key, "header key is not valid UTF-8")
                    # the age bound's replay exemption follows the topic, never the replay_of header
                    meta, image = decode_frame(rec.value, headers, replay=is_replay(tp.topic, self._cfg))
                    self._tracker.label(ticket, (meta.line_id, meta.camera_id))
                except FrameError as exc:  # a bad frame is data, not a failure: dead-lettered
                    err = exc
                except Exception as exc:  # noqa: BLE001 - whatever else a record triggers: dead-lettered too
                    log.warning("record %s[%d]@%d failed to decode unexpectedly: %r",
                                tp.topic, tp.partition, rec.offset, exc)
                    err = exc
                out.append(
                    PolledFrame(
                        ticket=ticket, topic=tp.topic, partition=tp.partition, offset=rec.offset,
                        key=rec.key if isinstance(rec.key, bytes) else None, value=bytes(value), headers=headers,
                        received_at=received, decode_s=time.perf_counter() - t0, meta=meta, image=image, error=err,
                        record_ts=_record_ts(rec),
                    )
                )
        self._attach_existing(out)
        self.polled += len(out)
        self._deliver(out)

    def _attach_existing(self, frames: list[PolledFrame]) -> None:
        """Mark the frames that already have a result (redelivery): not decided again."""
        if self._lookup is None or self._prefix_of is None:
            return
        keys = {}
        for f in frames:
            if f.meta is not None:
                try:
                    keys[id(f)] = (self._prefix_of(f.topic), f.meta.frame_id)
                except Exception as exc:  # noqa: BLE001 - no lookup for this one: decided normally
                    log.warning("no result lookup for %s[%d]@%d: %r", f.topic, f.partition, f.offset, exc)
        found = self._lookup(list(dict.fromkeys(keys.values())))
        for f in frames:
            k = keys.get(id(f))
            if k is not None and k in found:
                f.existing = found[k]

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

    def commit(self, sync: bool = False) -> None:
        """Commit every partition whose contiguous watermark moved (consumer thread only).

        Asynchronous, one commit in flight: the poll loop never waits for the coordinator (a
        synchronous commit every ``commit_interval_ms`` held polling for its round trip: the
        ``kafka`` stage's tail under load). Its outcome arrives in a later ``poll`` on this thread
        (:meth:`_commit_done`); a commit unanswered after ``commit_timeout_ms`` is counted as failed
        and the next one goes out. ``sync`` (shutdown) waits for the answer."""
        from kafka.structs import OffsetAndMetadata

        timeout_ms = self._cfg.ingress.commit_timeout_ms
        if self._commit_sent is not None:
            waited = time.monotonic() - self._commit_sent[1]
            if waited * 1000 >= timeout_ms:
                self.commit_errors += 1
                log.warning("commit unanswered after %.1f s; sending the next one", waited)
            elif not sync:
                return
            self._commit_sent = None  # its answer, if it comes, still marks what it covered
        offsets = self._tracker.committable()
        if not offsets:
            return
        request = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        self._commit_seq += 1
        seq = self._commit_seq
        try:
            if not sync:
                self._commit_sent = (seq, time.monotonic())
                self._consumer.commit_async(request, callback=lambda _req, res: self._commit_done(seq, offsets, res))
                return
            self._consumer.commit(request, timeout_ms=timeout_ms)
        except Exception as exc:  # noqa: BLE001 - handled as a failed commit (retried next interval)
            self._commit_done(seq, offsets, exc)
            return
        self._commit_done(seq, offsets, None)

    def _commit_done(self, seq: int, offsets: dict[Any, int], outcome: Any) -> None:
        """Commit ``seq``'s answer: an exception, or anything else for success."""
        if self._commit_sent is not None and self._commit_sent[0] == seq:
            self._commit_sent = None
        if isinstance(outcome, BaseException):
            self._commit_failed(offsets, outcome)
            return
        waits = self._tracker.mark_committed(offsets)
        self.commits += 1
        if self._on_commit is not None and waits:
            self._on_commit(waits)

    def _commit_failed(self, offsets: dict[Any, int], exc: BaseException) -> None:
        from kafka.errors import CommitFailedError, RebalanceInProgressError

        if isinstance(exc, CommitFailedError | RebalanceInProgressError):
            # the group moved on: these partitions are being reassigned; their uncommitted frames
            # are redelivered to the new owner (idempotent sinks) — nothing to retry here
            log.warning("commit of %s failed during a rebalance: %r", offsets, exc)
            return
        # broker restart, coordinator moved: the watermark is committed again at the next interval
        self.commit_errors += 1
        log.warning("commit of %s failed (%r); retried at the next interval", offsets, exc)

    def _report_lag(self) -> None:
        lag: dict[int, int] = {}
        try:
            for tp in self._consumer.assignment():
                hw = self._consumer.highwater(tp)
                if hw is None:
                    continue
                lag[tp.partition] = max(0, hw - self._consumer.position(tp, timeout_ms=1000))
        except Exception as exc:  # noqa: BLE001 - lag is a metric: skip this round
            log.debug("lag report skipped: %r", exc)
            return
        self._on_lag(lag)

    def _shutdown(self) -> None:
        """Graceful stop: let in-flight frames finish (bounded), commit, leave the group."""
        deadline = time.monotonic() + self._cfg.ingress.revoke_drain_timeout_s
        while self._tracker.in_flight() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.commit(sync=True)
        self._consumer.close(autocommit=False)


def _record_ts(rec: Any) -> float | None:
    ts = getattr(rec, "timestamp", None)
    return ts / 1000.0 if isinstance(ts, int) and ts > 0 else None


class _UnreadableRecord(RuntimeError):
    """A record the Kafka client raised on while parsing it (dead-lettered as a stub)."""


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
        marks = owner._tracker.watermarks(revoked)
        final = owner._tracker.revoke(revoked)
        if left:
            # if one of these comes back to this member, kafka-python keeps its position past
            # the dropped frames: on_partitions_assigned seeks it back to this watermark
            owner._seek_back.update({tp: marks[tp] for tp in revoked if tp in marks})
            log.warning("revoked %s with %d frame(s) still in flight: they will be redelivered", revoked, left)
        if final:
            # a blocking commit is not allowed on the IO thread; the async one is sent before the
            # JoinGroup request. If it loses the race the new owner re-reads (idempotent sinks).
            owner._consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in final.items()})
        log.info("partitions revoked: %s (final commit %s)", revoked, final)

    def on_partitions_assigned(self, assigned: Any) -> None:
        owner = self._owner
        assigned = list(assigned)
        owner._tracker.assign(assigned)
        back, owner._seek_back = owner._seek_back, {}
        for tp in assigned:
            if tp in back:
                owner._consumer.seek(tp, back[tp])
                log.info("partition %s re-assigned to this member: sought back to %d", tp, back[tp])
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    def on_partitions_lost(self, lost: Any) -> None:
        # evicted from the group: committing is impossible, just forget the partitions
        dropped = self._owner._tracker.revoke(list(lost))
        log.warning("partitions lost (evicted): %s; uncommitted watermarks %s dropped", lost, dropped)
