"""The checkpoint: owns the sinks and the commit protocol, written once.

``setup() / add(outcome) / flush() / close()``. :meth:`Checkpoint.flush` confirms what was added,
strictly in this order, and stops at the first step that fails:

1. results written to Redis (one transaction: hashes with their TTL, stream entries);
2. reject commands acknowledged by the broker (claimed per item, see :mod:`inference.sinks`) and
   dead letters acknowledged by the broker;
3. the frames' offsets marked complete (``complete``, the :class:`~inference.offsets.OffsetTracker`)
   — the consumer thread, the only one allowed to call kafka-python, commits the contiguous
   watermark of completed offsets, so a commit never covers a frame whose step 1-2 is not done.

Each sink keeps only what it has not confirmed, so a retried flush resumes where the failed one
stopped: results are not rewritten, a command acknowledged is not resent, a dead letter
acknowledged is not resent. :meth:`Checkpoint.flush_until_confirmed` retries with backoff (the
in-flight window fills meanwhile and the consumer pauses), recording since when it fails for the
health check.

A redelivered frame that already has a result (``Outcome.write_result`` False) skips step 1; its
stored result still goes through step 2 (the claim makes it a no-op when its command went out).
A fail-safe result never replaces a stored model verdict of the same frame (the results sink keeps
the stored one: a redelivery whose lookup failed while Redis was down): the frame then actuates by
its stored verdict and counts as redelivered, so a part that passed is not rejected minutes later.
Reject commands are therefore handed to the reject sink only after step 1 succeeded.
Replayed frames write to their own namespace and actuate only when the operator asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference.config import ServeAppConfig
from inference.contracts import RejectCommand, Result, result_key
from inference.decision import Outcome

log = logging.getLogger(__name__)


@dataclass
class FlushReport:
    """What one confirmed flush covered."""

    outcomes: list[Outcome] = field(default_factory=list)
    sent: list[RejectCommand] = field(default_factory=list)


class Checkpoint:
    """See the module docstring. ``results``/``rejects``/``dlq`` are sinks with ``setup / add /
    flush / close``; ``complete(ticket)`` marks one offset done."""

    def __init__(
        self,
        results: Any,
        rejects: Any,
        dlq: Any,
        complete: Callable[[Any], bool],
        backoff_max_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        redis_factory: Callable[[], Any] | None = None,
        on_close: Callable[[], None] | None = None,
        warm: Callable[[], Any] | None = None,
    ):
        self.results, self.rejects, self.dlq = results, rejects, dlq
        self.redis_factory = redis_factory
        self._on_close = on_close
        self._warm = warm
        self._complete = complete
        self._backoff_max = backoff_max_s
        self._sleep = sleep
        self._outcomes: list[Outcome] = []
        self._to_actuate: list[Outcome] = []  # handed to the reject sink once step 1 confirmed
        self.failing_since: float | None = None
        self.last_error: BaseException | None = None

    def setup(self) -> None:
        for s in (self.results, self.rejects, self.dlq):
            s.setup()

    def warm(self) -> None:
        """Create the Kafka producer now if the broker answers (else at the first send)."""
        if self._warm is not None:
            self._warm()

    def add(self, o: Outcome) -> None:
        """Buffer one outcome in the sinks it needs (a record the line could not judge may need
        both: its dead letter and its REJECT result)."""
        if o.dead is not None:
            self.dlq.add(o.dead)
        if o.result is not None:
            if o.write_result:
                self.results.add(o.result, o.prefix)
            if o.actuate:
                self._to_actuate.append(o)
        self._outcomes.append(o)

    def flush(self) -> FlushReport:
        """Steps 1 → 2 → 3 (module doc); raises at the first unconfirmed step, keeping the rest."""
        kept = self.results.flush()
        if isinstance(kept, dict) and kept:
            for o in self._outcomes:
                stored = kept.get((o.prefix, o.result.frame_id)) if o.result is not None else None
                if stored is not None:  # its stored model verdict stands: not decided again
                    o.result, o.write_result, o.inspected = stored, False, False
        for o in self._to_actuate:
            self.rejects.add(o.result)
        self._to_actuate = []
        sent = self.rejects.flush()
        self.dlq.flush()
        done, self._outcomes = self._outcomes, []
        for o in done:
            self._complete(o.frame.ticket)
        return FlushReport(done, list(sent or []))

    def flush_until_confirmed(self, stopping: Callable[[], bool] = lambda: False) -> FlushReport:
        """:meth:`flush`, retried with backoff until it succeeds (or ``stopping()``: re-raises)."""
        delay = 0.1
        while True:
            try:
                report = self.flush()
                self.failing_since = None
                return report
            except Exception as exc:  # noqa: BLE001 - any sink failure is retried, never fatal
                from inference.sinks import ClaimBusy

                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.last_error = exc
                level = logging.INFO if isinstance(exc, ClaimBusy) else logging.ERROR
                log.log(level, "checkpoint of %d frame(s) not confirmed, retrying in %.1fs: %r",
                         len(self._outcomes), delay, exc)
                if stopping():
                    raise
                self._sleep(delay)
                delay = min(delay * 2, self._backoff_max)

    def failing_for_s(self) -> float:
        since = self.failing_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        for s in (self.results, self.rejects, self.dlq):
            try:
                s.close()
            except Exception:  # noqa: BLE001 - closing is best effort; logged
                log.exception("closing sink %s failed", type(s).__name__)
        if self._on_close is not None:
            self._on_close()


def open_checkpoint(cfg: ServeAppConfig, complete: Callable[[Any], bool]) -> Checkpoint:
    """The production checkpoint: Redis results, and one producer for rejects and dead letters with
    a bounded ``delivery_timeout_ms`` and ``max_request_size`` = ``DLQ_MAX_MESSAGE_BYTES`` (a dead
    letter of the largest frame fits). Nothing here reaches a server: redis-py connects on the
    first command and the producer is a :class:`~inference.lazy_producer.LazyProducer` (created on
    first use, its bootstrap bounded by the delivery timeout), so the replica starts while Kafka
    or Redis is down and the flush retries until they answer (:meth:`Checkpoint.warm` creates the
    producer early, on the sink thread)."""
    import redis
    from kafka import KafkaProducer

    from inference.lazy_producer import LazyProducer
    from inference.sinks import DeadLetterSink, DeliveredLookup, RedisResultSink, RejectSink
    from ingest.topics import DLQ_MAX_MESSAGE_BYTES

    s = cfg.sink

    def redis_factory() -> Any:
        return redis.Redis(**cfg.redis.client_kwargs(), socket_timeout=s.redis_timeout_s,
                           socket_connect_timeout=s.redis_timeout_s)

    producer = LazyProducer(lambda: KafkaProducer(
        **cfg.kafka.client_kwargs(), acks="all", linger_ms=1, max_request_size=DLQ_MAX_MESSAGE_BYTES,
        delivery_timeout_ms=s.delivery_timeout_ms, request_timeout_ms=max(500, s.delivery_timeout_ms // 2),
        bootstrap_timeout_ms=s.delivery_timeout_ms,
        reconnect_backoff_ms=50, reconnect_backoff_max_ms=cfg.ingress.reconnect_backoff_max_ms,
    ), name="reject/dead-letter producer")
    delivery_s = s.delivery_timeout_ms / 1000.0
    cp = Checkpoint(
        RedisResultSink(redis_factory, s.result_ttl_s, s.stream_maxlen, s.stream_ttl_s),
        RejectSink(redis_factory, producer, cfg.topics.rejects, cfg.redis.key_prefix, s.reject_claim_ttl_s,
                   delivery_timeout_s=delivery_s, takeover_s=s.reject_takeover_s,
                   delivered=DeliveredLookup(cfg.kafka.client_kwargs(), cfg.topics.rejects)),
        DeadLetterSink(producer, cfg.topics.dlq, send_timeout_s=delivery_s + 5.0),
        complete, backoff_max_s=s.retry_backoff_max_s, redis_factory=redis_factory,
        on_close=lambda: producer.close(timeout=10), warm=producer.warm,
    )
    cp.setup()
    return cp


class ResultLookup:
    """Which polled frames already have a result (redelivery), read in one pipeline per poll.

    Used on the consumer thread with its own Redis client. A failed lookup returns nothing (the
    frames are decided again: the result is overwritten and the reject claim de-duplicates)."""

    def __init__(self, redis_factory: Callable[[], Any]):
        self._factory = redis_factory
        self._redis: Any = None

    def __call__(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Result]:
        """``wanted``: (results prefix, frame id) pairs → the stored results that exist."""
        if not wanted:
            return {}
        try:
            if self._redis is None:
                self._redis = self._factory()
            pipe = self._redis.pipeline(transaction=False)
            for prefix, fid in wanted:
                pipe.hgetall(result_key(prefix, fid))
            found = pipe.execute()
            out = {}
            for key, h in zip(wanted, found, strict=True):
                if h:
                    try:
                        out[key] = Result.from_redis(h)
                    except Exception as exc:  # noqa: BLE001 - unreadable stored result: decide again
                        log.warning("stored result %s unreadable, deciding again: %r", key, exc)
            return out
        except Exception as exc:  # noqa: BLE001 - Redis down: decide again (idempotent sinks)
            log.warning("result lookup of %d frame(s) failed: %r", len(wanted), exc)
            self._redis = None
            return {}

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
