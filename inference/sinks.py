"""Where decisions go: Redis (results), the rejects topic (commands), the dead-letter topic.

Every sink has the ``setup() / add(x) / flush() / close()`` life cycle: ``add`` only buffers,
``flush`` blocks until the backend confirmed everything buffered (Redis pipeline executed, Kafka
broker acks) or raises. The ingress calls the flushes from a worker thread and commits offsets only
after they all returned — commit order: sinks → producer acks → offsets.

Reject idempotency: before a command is sent, the item is claimed with
``SET {prefix}:rejected:{item_id} "{frame_id}|pending|{unix time}" NX EX ttl``; after the broker
ack the claim becomes ``"{frame_id}|sent"``; a failed send releases the claim (only if still ours)
and raises, so the batch is retried and nothing is committed. A frame finding a claim:

* ``…|sent``, or another frame's ``…|pending|…`` → no command: the item is rejected, or another
  frame of it is being rejected (that frame's offset stays uncommitted until its command is acked,
  so if its sender dies, its redelivery finishes the job);
* its own ``frame_id|pending|t`` → the same frame is (or was) being sent elsewhere: a redelivery
  racing a revoked owner that is still flushing, or an attempt that died between claim and ack.
  Younger than ``takeover_s``: :class:`ClaimBusy` (retryable; the flush is retried and resolves
  to "sent" → nothing to do). Older: the attempt is dead; the claim is taken over atomically and
  the command sent.

The one window left for a second command is a crash between the broker's ack and the ``sent``
mark (one Redis round trip). Commands are keyed by item id, so the actuator or a compacted topic
can absorb even that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.contracts import RejectCommand, Result, reject_claim_key, result_key, stream_key

log = logging.getLogger(__name__)

_RELEASE_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_TAKEOVER_LUA = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 else return 0 end"
)


class SinkError(RuntimeError):
    """A sink could not confirm what it was given (the batch must not be committed)."""


class ClaimBusy(SinkError):
    """A reject claim of the same frame is held by a sender that may still be sending; retry."""


class RedisResultSink:
    """One hash per frame (with TTL) plus an entry in the line's capped stream."""

    def __init__(self, redis_factory: Callable[[], Any], prefix: str, ttl_s: int, stream_maxlen: int):
        self._factory = redis_factory
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._maxlen = stream_maxlen
        self._redis: Any = None
        self._buf: list[Result] = []

    def setup(self) -> None:
        self._redis = self._factory()

    def add(self, result: Result) -> None:
        self._buf.append(result)

    def flush(self) -> int:
        if not self._buf:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for r in self._buf:
            key = result_key(self._prefix, r.frame_id)
            entry = r.to_redis(with_mask=False)
            pipe.hset(key, mapping={**entry, "mask_png": r.mask_png})
            pipe.expire(key, self._ttl_s)
            pipe.xadd(stream_key(self._prefix, r.line_id), entry, maxlen=self._maxlen, approximate=True)
        pipe.execute()  # raises on the first failed command
        n = len(self._buf)
        self._buf.clear()
        return n

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


@dataclass
class _Pending:
    cmd: RejectCommand
    claim_key: str
    claim_value: str


class RejectSink:
    """One reject command per item on the rejects topic, claimed in Redis first (see module doc)."""

    def __init__(
        self,
        redis_factory: Callable[[], Any],
        producer: Any,
        topic: str,
        prefix: str,
        claim_ttl_s: int,
        send_timeout_s: float = 10.0,
        takeover_s: float = 20.0,
        clock: Callable[[], float] = time.time,
    ):
        if takeover_s <= send_timeout_s:
            raise ValueError(f"takeover_s {takeover_s} must exceed send_timeout_s {send_timeout_s}")
        self._factory = redis_factory
        self._producer = producer
        self._topic = topic
        self._prefix = prefix
        self._ttl = claim_ttl_s
        self._timeout = send_timeout_s
        self._takeover = takeover_s
        self._clock = clock
        self._redis: Any = None
        self._buf: list[RejectCommand] = []
        self.sent = 0
        self.suppressed = 0

    def setup(self) -> None:
        self._redis = self._factory()

    def add(self, result: Result) -> None:
        """Buffer a command for ``result`` if it is a reject decision."""
        if result.decision:
            self._buf.append(RejectCommand.from_result(result))

    def _resolve(self, c: RejectCommand, key: str, mine: str) -> str:
        """After a failed NX: ``send`` (claimed now), ``skip`` or ``busy``."""
        current = self._redis.get(key)
        current = current.decode() if isinstance(current, bytes) else current
        if current is None:
            return "send" if self._redis.set(key, mine, nx=True, ex=self._ttl) else "busy"
        frame_id, _, rest = current.partition("|")
        if rest == "sent" or frame_id != c.frame_id:
            return "skip"
        _, _, stamp = rest.partition("|")
        try:
            age = self._clock() - float(stamp)
        except ValueError:
            age = float("inf")  # unreadable stamp: treat as abandoned
        if age < self._takeover:
            return "busy"
        took = self._redis.eval(_TAKEOVER_LUA, 1, key, current, mine, str(self._ttl))
        return "send" if took else "busy"

    def _claim(self, cmds: Sequence[RejectCommand]) -> tuple[list[_Pending], list[RejectCommand]]:
        keys = [reject_claim_key(self._prefix, c.item_id) for c in cmds]
        now = self._clock()
        mine = [f"{c.frame_id}|pending|{now:.3f}" for c in cmds]
        pipe = self._redis.pipeline(transaction=False)
        for k, v in zip(keys, mine, strict=True):
            pipe.set(k, v, nx=True, ex=self._ttl)
        got = pipe.execute()
        out: list[_Pending] = []
        busy: list[RejectCommand] = []
        for c, k, v, ok in zip(cmds, keys, mine, got, strict=True):
            verdict = "send" if ok else self._resolve(c, k, v)
            if verdict == "send":
                out.append(_Pending(c, k, v))
            elif verdict == "busy":
                busy.append(c)
            else:
                self.suppressed += 1
        return out, busy

    def flush(self) -> list[RejectCommand]:
        """Claim, send and confirm every buffered command; returns the commands sent.

        Raises :class:`SinkError` (a send not acked) or :class:`ClaimBusy`; what is left to do
        stays buffered for the retry, what was sent does not."""
        if not self._buf:
            return []
        # one command per item within the batch too: the first frame of an item wins
        seen: set[str] = set()
        cmds = []
        for c in self._buf:
            if c.item_id in seen:
                self.suppressed += 1
                continue
            seen.add(c.item_id)
            cmds.append(c)
        pending, busy = self._claim(cmds)
        futures = []
        for p in pending:
            key, value = p.cmd.to_kafka()
            futures.append((p, self._producer.send(self._topic, key=key, value=value)))
        failed: list[tuple[_Pending, BaseException]] = []
        acked: list[_Pending] = []
        for p, fut in futures:
            try:
                fut.get(timeout=self._timeout)
                acked.append(p)
            except Exception as exc:  # noqa: BLE001 - collected and re-raised below with context
                failed.append((p, exc))
        if acked:
            pipe = self._redis.pipeline(transaction=False)
            for p in acked:
                pipe.set(p.claim_key, f"{p.cmd.frame_id}|sent", ex=self._ttl)
            pipe.execute()
        self.sent += len(acked)
        # keep only what is left: a retry must not resend what the broker already has
        self._buf = [p.cmd for p, _ in failed] + busy
        if failed:
            for p, _ in failed:
                self._redis.eval(_RELEASE_LUA, 1, p.claim_key, p.claim_value)
            p, exc = failed[0]
            raise SinkError(
                f"{len(failed)} reject command(s) to {self._topic} not acknowledged; first: "
                f"item {p.cmd.item_id} frame {p.cmd.frame_id}: {exc!r}"
            ) from exc
        if busy:
            raise ClaimBusy(
                f"{len(busy)} reject(s) claimed by a sender still in flight; first: item "
                f"{busy[0].item_id} frame {busy[0].frame_id} (taken over after {self._takeover}s)"
            )
        return [p.cmd for p in acked]

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


@dataclass(frozen=True)
class DeadLetterIn:
    """A frame to dead-letter: the original record and why it failed."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str
    stage: str
    topic: str
    partition: int
    offset: int
    error: BaseException | None = None


class DeadLetterSink:
    """Bad frames to the dead-letter topic (``ingest.dlq.to_dead_letter`` format)."""

    def __init__(self, producer: Any, topic: str, send_timeout_s: float = 30.0):
        self._producer = producer
        self._topic = topic
        self._timeout = send_timeout_s
        self._buf: list[DeadLetterIn] = []

    def setup(self) -> None:
        pass

    def add(self, item: DeadLetterIn) -> None:
        self._buf.append(item)

    def flush(self) -> int:
        if not self._buf:
            return 0
        from ingest.dlq import to_dead_letter

        futures = []
        for d in self._buf:
            value, headers = to_dead_letter(
                d.value, d.headers, d.reason, d.stage, d.topic, d.partition, d.offset, error=d.error
            )
            futures.append((d, self._producer.send(self._topic, key=d.key, value=value, headers=headers)))
        for d, fut in futures:
            try:
                fut.get(timeout=self._timeout)
            except Exception as exc:  # noqa: BLE001 - re-raised with the record's coordinates
                raise SinkError(
                    f"dead letter for {d.topic}[{d.partition}]@{d.offset} not acknowledged by "
                    f"{self._topic}: {exc!r}"
                ) from exc
        n = len(self._buf)
        self._buf.clear()
        return n

    def close(self) -> None:
        pass
