"""Where decisions go: Redis (results), the rejects topic (commands), the dead-letter topic.

Every sink has the ``setup() / add(x) / flush() / close()`` life cycle: ``add`` only buffers,
``flush`` blocks until the backend confirmed everything buffered (Redis transaction executed, Kafka
broker acks) or raises, keeping what is left to do. The commit protocol that orders them lives in
:mod:`inference.checkpoint`.

Results: one ``MULTI/EXEC`` per flush writes each hash together with its TTL (never a hash without
one) and appends to the line's capped stream, which expires ``stream_ttl_s`` after its last entry.

Reject idempotency (exactly one command per item): before a command is sent the item is claimed in
Redis by :data:`CLAIM_LUA` — one atomic script that reads and writes
``{prefix}:rejected:{item_id}`` = ``"{frame_id}|pending|{unix time}"`` or ``"{frame_id}|sent"``:

* no claim → claimed now, ``send``;
* ``…|sent`` → ``skip`` (the item is rejected already);
* a ``pending`` claim younger than ``takeover_s`` (any frame) → ``busy``: its sender may still be
  delivering; the flush is retried and normally finds ``sent``;
* a ``pending`` claim older than ``takeover_s`` → its sender died between claim and ack: taken over
  atomically, ``send`` (so no item is left unrejected).

``takeover_s`` exceeds the producer's ``delivery_timeout_ms`` (config validates it), so a live
sender's claim is never taken. A send is waited for until its *final* outcome: a send whose
outcome is still unknown stays in flight (its claim kept, nothing committed) and is waited for
again on the next flush; a send that failed is resent under the **same** claim (refreshed by
:data:`RENEW_LUA`), never released — so no other frame of the item can send a second, different
command. After the ack the claim becomes ``sent`` (:data:`MARK_LUA`); a failed mark is retried on
its own, never by resending.

The one window left for a second command is a send that failed in the producer after the broker
stored it (or a crash between ack and mark); both repeat the same ``command_id`` for the item, which
the actuator de-duplicates (:class:`~inference.contracts.RejectCommand`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference.contracts import RejectCommand, Result, reject_claim_key, result_key, stream_key

log = logging.getLogger(__name__)

#: KEYS[1] claim key; ARGV frame_id, now (unix s), takeover_s, ttl_s -> {verdict, value}
CLAIM_LUA = """
local cur = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. '|pending|' .. ARGV[2]
if not cur then
  redis.call('SET', KEYS[1], mine, 'EX', ARGV[4])
  return {'send', mine}
end
local frame, state, stamp = string.match(cur, '^([^|]*)|([^|]*)|?(.*)$')
if state == 'sent' then
  return {'skip', cur}
end
local age = tonumber(ARGV[2]) - (tonumber(stamp) or 0)
if age >= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], mine, 'EX', ARGV[4])
  return {'send', mine}
end
return {'busy', cur}
"""
#: KEYS[1] claim key; ARGV our pending value, new pending value, ttl_s -> 1 renewed / 0 not ours
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
#: KEYS[1] claim key; ARGV our pending value, sent value, ttl_s -> 1 marked (or already) / 0 taken
MARK_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or cur == false then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
if cur == ARGV[2] then
  return 1
end
return 0
"""


class SinkError(RuntimeError):
    """A sink could not confirm what it was given (the batch must not be committed)."""


class ClaimBusy(SinkError):
    """A reject claim is held by a sender that may still be sending; retry."""


class RedisResultSink:
    """One hash per frame (hash + TTL in one transaction) plus an entry in the line's stream."""

    def __init__(self, redis_factory: Callable[[], Any], ttl_s: int, stream_maxlen: int, stream_ttl_s: int):
        self._factory = redis_factory
        self._ttl_s = ttl_s
        self._maxlen = stream_maxlen
        self._stream_ttl_s = stream_ttl_s
        self._redis: Any = None
        self._buf: list[tuple[str, Result]] = []

    def setup(self) -> None:
        self._redis = self._factory()

    def add(self, result: Result, prefix: str) -> None:
        """Buffer ``result`` for ``prefix`` (live or replay namespace)."""
        self._buf.append((prefix, result))

    def flush(self) -> int:
        if not self._buf:
            return 0
        pipe = self._redis.pipeline(transaction=True)
        for prefix, r in self._buf:
            key = result_key(prefix, r.frame_id)
            entry = r.to_redis(with_mask=False)
            pipe.delete(key)  # a redelivered frame overwrites its own result, no stale fields
            pipe.hset(key, mapping={**entry, "mask_png": r.mask_png})
            pipe.expire(key, self._ttl_s)
            skey = stream_key(prefix, r.line_id)
            pipe.xadd(skey, entry, maxlen=self._maxlen, approximate=True)
            pipe.expire(skey, self._stream_ttl_s)
        pipe.execute()  # raises on a failed transaction; nothing partial is left
        n = len(self._buf)
        self._buf.clear()
        return n

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


@dataclass
class _Pending:
    """A claimed command: its claim value, and the send in flight (if any)."""

    cmd: RejectCommand
    key: str
    claim: str
    future: Any = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class RejectSink:
    """One reject command per item on the rejects topic, claimed in Redis first (see module doc)."""

    def __init__(
        self,
        redis_factory: Callable[[], Any],
        producer: Any,
        topic: str,
        claim_prefix: str,
        claim_ttl_s: int,
        delivery_timeout_s: float = 15.0,
        takeover_s: float = 45.0,
        clock: Callable[[], float] = time.time,
    ):
        if takeover_s <= delivery_timeout_s:
            raise ValueError(f"takeover_s {takeover_s} must exceed delivery_timeout_s {delivery_timeout_s}")
        self._factory = redis_factory
        self._producer = producer
        self._topic = topic
        self._prefix = claim_prefix
        self._ttl = claim_ttl_s
        self._wait_s = delivery_timeout_s + 5.0
        self._takeover = takeover_s
        self._clock = clock
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._todo: list[RejectCommand] = []
        self._inflight: list[_Pending] = []
        self._unmarked: list[_Pending] = []
        self.sent = 0
        self.suppressed = 0
        self.resent = 0
        self.takeovers = 0

    def setup(self) -> None:
        self._redis = self._factory()
        self._scripts = {name: self._redis.register_script(src)
                         for name, src in (("claim", CLAIM_LUA), ("renew", RENEW_LUA), ("mark", MARK_LUA))}

    def add(self, result: Result) -> None:
        """Buffer a command for ``result`` if it is a reject decision."""
        if result.decision:
            self._todo.append(RejectCommand.from_result(result))

    @property
    def pending(self) -> int:
        """Commands not yet confirmed (to claim, in flight, or acked and not marked)."""
        return len(self._todo) + len(self._inflight) + len(self._unmarked)

    def _now(self) -> str:
        return f"{self._clock():.3f}"

    def _claim(self, cmds: Sequence[RejectCommand]) -> tuple[list[_Pending], list[RejectCommand]]:
        pipe = self._redis.pipeline(transaction=False)
        keys = [reject_claim_key(self._prefix, c.item_id) for c in cmds]
        now = self._now()
        for c, k in zip(cmds, keys, strict=True):
            self._scripts["claim"](keys=[k], args=[c.frame_id, now, self._takeover, self._ttl], client=pipe)
        got = pipe.execute()
        claimed: list[_Pending] = []
        busy: list[RejectCommand] = []
        for c, k, (verdict, value) in zip(cmds, keys, got, strict=True):
            verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
            value = value.decode() if isinstance(value, bytes) else value
            if verdict == "send":
                claimed.append(_Pending(c, k, value))
            elif verdict == "busy":
                busy.append(c)
            else:
                self.suppressed += 1
        return claimed, busy

    def _send(self, p: _Pending) -> None:
        key, value = p.cmd.to_kafka()
        p.attempts += 1
        p.future = self._producer.send(self._topic, key=key, value=value)

    def _resolve(self, p: _Pending) -> str:
        """Wait for ``p``'s send: ``acked``, ``failed`` (final, resend) or ``unknown`` (not done)."""
        try:
            p.future.get(timeout=self._wait_s)
            return "acked"
        except Exception as exc:  # noqa: BLE001 - classified below, kept with the command
            p.errors.append(repr(exc))
            if not getattr(p.future, "is_done", True):
                return "unknown"
            return "failed"

    def flush(self) -> list[RejectCommand]:
        """Claim, send and confirm every buffered command; returns the commands newly sent.

        Raises :class:`SinkError` (a send not confirmed, a mark not written) or
        :class:`ClaimBusy`; what is left stays for the next flush, what is done is not redone."""
        sent: list[RejectCommand] = []
        if self._todo:
            seen: set[str] = {p.cmd.item_id for p in self._inflight + self._unmarked}
            cmds = []
            for c in self._todo:  # one command per item within the batch too: first frame wins
                if c.item_id in seen:
                    self.suppressed += 1
                    continue
                seen.add(c.item_id)
                cmds.append(c)
            claimed, busy = self._claim(cmds)
            self._todo = busy
            for p in claimed:
                self._send(p)
            self._inflight.extend(claimed)
        still: list[_Pending] = []
        for p in self._inflight:
            if p.future is None:
                self._send(p)
            verdict = self._resolve(p)
            if verdict == "acked":
                self._unmarked.append(p)
            elif verdict == "unknown":
                still.append(p)
            else:  # final failure: resend under the same (refreshed) claim, never release it
                renewed = f"{p.cmd.frame_id}|pending|{self._now()}"
                if self._scripts["renew"](keys=[p.key], args=[p.claim, renewed, self._ttl]):
                    p.claim, p.future = renewed, None
                    self.resent += 1
                    still.append(p)
                else:  # taken over by another sender (ours outlived takeover_s): theirs goes out
                    log.warning("reject claim %s was taken over while sending item %s", p.key, p.cmd.item_id)
                    self.suppressed += 1
        self._inflight = still
        if self._unmarked:
            pipe = self._redis.pipeline(transaction=False)
            for p in self._unmarked:
                self._scripts["mark"](keys=[p.key], args=[p.claim, f"{p.cmd.frame_id}|sent", self._ttl], client=pipe)
            marks = pipe.execute()  # raises: marks retried alone next flush (nothing resent)
            for p, ok in zip(self._unmarked, marks, strict=True):
                if not ok:
                    log.warning("reject claim %s for item %s changed hands before its sent mark", p.key, p.cmd.item_id)
                sent.append(p.cmd)
            self._unmarked = []
        self.sent += len(sent)
        if self._inflight:
            p = self._inflight[0]
            raise SinkError(
                f"{len(self._inflight)} reject command(s) to {self._topic} not confirmed (claims kept); "
                f"first: item {p.cmd.item_id} frame {p.cmd.frame_id}: {p.errors[-1] if p.errors else 'in flight'}"
            )
        if self._todo:
            c = self._todo[0]
            raise ClaimBusy(
                f"{len(self._todo)} reject(s) claimed by a sender still in flight; first: item "
                f"{c.item_id} frame {c.frame_id} (taken over after {self._takeover}s)"
            )
        return sent

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
    """Bad frames to the dead-letter topic (``ingest.dlq.to_dead_letter`` format). Its producer's
    ``max_request_size`` is ``DLQ_MAX_MESSAGE_BYTES``; a record the broker still refuses as too
    large is dead-lettered without its value (the reason says so) rather than retried forever."""

    def __init__(self, producer: Any, topic: str, send_timeout_s: float = 30.0):
        self._producer = producer
        self._topic = topic
        self._timeout = send_timeout_s
        self._buf: list[DeadLetterIn] = []

    def setup(self) -> None:
        pass

    def add(self, item: DeadLetterIn) -> None:
        self._buf.append(item)

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _send(self, d: DeadLetterIn) -> Any:
        from ingest.dlq import to_dead_letter

        value, headers = to_dead_letter(
            d.value, d.headers, d.reason, d.stage, d.topic, d.partition, d.offset, error=d.error
        )
        return self._producer.send(self._topic, key=d.key, value=value, headers=headers)

    def flush(self) -> int:
        if not self._buf:
            return 0
        from kafka.errors import MessageSizeTooLargeError

        futures = [(d, self._send(d)) for d in self._buf]
        failed: list[tuple[DeadLetterIn, BaseException]] = []
        for d, fut in futures:
            try:
                fut.get(timeout=self._timeout)
            except MessageSizeTooLargeError as exc:
                slim = DeadLetterIn(d.key, b"", [], f"{d.reason} [original record dropped: {exc}]", d.stage,
                                    d.topic, d.partition, d.offset, d.error)
                failed.append((slim, exc))
            except Exception as exc:  # noqa: BLE001 - kept for the retry, re-raised with coordinates
                failed.append((d, exc))
        n = len(self._buf) - len(failed)
        self._buf = [d for d, _ in failed]
        if failed:
            d, exc = failed[0]
            raise SinkError(
                f"{len(failed)} dead letter(s) not acknowledged by {self._topic}; first "
                f"{d.topic}[{d.partition}]@{d.offset}: {exc!r}"
            ) from exc
        return n

    def close(self) -> None:
        pass
