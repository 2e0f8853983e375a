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
* a ``pending`` claim older than ``takeover_s`` → its sender died (before or after the broker
  stored its command): taken over atomically (``takeover``). Before sending, the rejects topic itself
  is read (:class:`DeliveredLookup`) from the item's first claim time for a record with the item's key
  and ``command_id``: found → the claim is marked ``sent`` and nothing is sent; not found → sent (so no
  item is left unrejected); the lookup failed → nothing is sent, the claim stays pending and the
  lookup is retried (never a second delivery; the item is rejected once the lookup succeeds).

``takeover_s`` exceeds the producer's ``delivery_timeout_ms`` (config validates it), so a live
sender's claim is never taken. A send is waited for until its *final* outcome: a send whose
outcome is still unknown stays in flight (its claim kept, nothing committed) and is waited for
again on the next flush; a send that failed is resent under the **same** claim (refreshed by
:data:`RENEW_LUA`), never released — so no other frame of the item can send a second, different
command — and only after the same topic lookup as a takeover (the broker may have stored the send
the producer reported failed). After the ack the claim becomes ``sent`` (:data:`MARK_LUA`); a failed
mark is retried on its own, never by resending.

What is left: a command the broker stored but had not yet made visible to consumers (not yet
replicated to the in-sync replicas) when the lookup read the topic. Every command of an item carries
the same ``command_id``, which the actuator can de-duplicate (:class:`~inference.contracts.RejectCommand`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference.contracts import RejectCommand, Result, reject_claim_key, result_key, stream_key

log = logging.getLogger(__name__)

#: KEYS[1] claim key; ARGV frame_id, now (unix s), takeover_s, ttl_s -> {verdict, value[, previous]}
#: A pending value is ``frame|pending|stamp|since``: ``stamp`` the last claim or renewal (the age a
#: takeover is judged by), ``since`` when the item was first claimed (kept across takeovers: the
#: earliest a command of this claim can have reached the topic). ``takeover`` returns the old value.
CLAIM_LUA = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  local mine = ARGV[1] .. '|pending|' .. ARGV[2] .. '|' .. ARGV[2]
  redis.call('SET', KEYS[1], mine, 'EX', ARGV[4])
  return {'send', mine}
end
local frame, state, stamp, since = string.match(cur, '^([^|]*)|([^|]*)|?([^|]*)|?(.*)$')
if state == 'sent' then
  return {'skip', cur}
end
local age = tonumber(ARGV[2]) - (tonumber(stamp) or 0)
if age >= tonumber(ARGV[3]) then
  local first = tonumber(since) or tonumber(stamp) or 0
  local mine = ARGV[1] .. '|pending|' .. ARGV[2] .. '|' .. string.format('%.3f', first)
  redis.call('SET', KEYS[1], mine, 'EX', ARGV[4])
  return {'takeover', mine, cur}
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


#: KEYS[1] result hash, KEYS[2] the line's stream; ARGV new-is-fail-safe ('1'/'0'), ttl_s, stream
#: maxlen, stream ttl_s, then the hash's field/value pairs -> 1 written, or the stored hash (kept).
#: A fail-safe result never replaces a stored model verdict of the same frame (a redelivery whose
#: result lookup failed, e.g. while Redis was down, must not turn a part that passed minutes ago
#: into a late reject); anything else rewrites the frame's own result, with no stale fields.
WRITE_RESULT_LUA = """
if ARGV[1] == '1' then
  local stored = redis.call('HGET', KEYS[1], 'failsafe')
  if stored == '' then
    return redis.call('HGETALL', KEYS[1])
  end
end
redis.call('DEL', KEYS[1])
local entry = {}
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i] ~= 'mask_png' then
    entry[#entry + 1] = ARGV[i]
    entry[#entry + 1] = ARGV[i + 1]
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


class RedisResultSink:
    """One hash per frame (hash + TTL in one transaction) plus an entry in the line's stream; a
    fail-safe result never replaces a stored model verdict (:data:`WRITE_RESULT_LUA`)."""

    def __init__(self, redis_factory: Callable[[], Any], ttl_s: int, stream_maxlen: int, stream_ttl_s: int):
        self._factory = redis_factory
        self._ttl_s = ttl_s
        self._maxlen = stream_maxlen
        self._stream_ttl_s = stream_ttl_s
        self._redis: Any = None
        self._write: Any = None
        self._buf: list[tuple[str, Result]] = []

    def setup(self) -> None:
        self._redis = self._factory()
        self._write = self._redis.register_script(WRITE_RESULT_LUA)

    def add(self, result: Result, prefix: str) -> None:
        """Buffer ``result`` for ``prefix`` (live or replay namespace)."""
        self._buf.append((prefix, result))

    def flush(self) -> dict[tuple[str, str], Result]:
        """Write everything buffered in one transaction (raises on failure; nothing partial is
        left). Returns the results that were *kept* instead: ``(prefix, frame_id)`` → the stored
        model verdict a buffered fail-safe result did not replace."""
        if not self._buf:
            return {}
        pipe = self._redis.pipeline(transaction=True)
        for prefix, r in self._buf:
            fields = [x for kv in {**r.to_redis(with_mask=False), "mask_png": r.mask_png}.items() for x in kv]
            self._write(keys=[result_key(prefix, r.frame_id), stream_key(prefix, r.line_id)],
                        args=["1" if r.failsafe is not None else "0", self._ttl_s, self._maxlen,
                              self._stream_ttl_s, *fields], client=pipe)
        answers = pipe.execute()
        kept: dict[tuple[str, str], Result] = {}
        for (prefix, r), got in zip(self._buf, answers, strict=True):
            if isinstance(got, list):
                stored = Result.from_redis(dict(zip(got[::2], got[1::2], strict=True)))
                log.warning("frame %s: stored model verdict kept, fail-safe %s (%s) not written",
                            r.frame_id, "reject" if r.decision else "pass", r.failsafe)
                kept[(prefix, r.frame_id)] = stored
        self._buf.clear()
        return kept

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
    #: look the command up on the topic before the next send (a taken-over claim, a failed send)
    check: bool = False


def _claim_since(claim: str) -> float:
    """When the item was first claimed (``frame|pending|stamp|since``; older values lack ``since``)."""
    parts = claim.split("|")
    return float(parts[3] if len(parts) > 3 and parts[3] else parts[2])


class DeliveredLookup:
    """Is a reject command already on the rejects topic? ``lookup(cmd, since)`` → a description of
    the record (``"rejects[2]@17"``) or None; raises when it cannot tell (broker unreachable, read
    not finished within its bounds) — the sink then sends nothing and asks again later.

    Reads every partition of the (low volume) topic from ``since - margin_s`` (``offsets_for_times``)
    up to the end offsets taken at the start of the lookup, with a group-less consumer (``assign`` +
    ``seek``, nothing committed), bounded by ``timeout_s`` and ``max_records``. A record matches when
    its key is the item id and its ``command_id`` is the command's. The consumer is created on the
    first lookup, dropped after a failed one, and closed by :meth:`close`."""

    def __init__(self, client_kwargs: dict[str, Any], topic: str, margin_s: float = 30.0,
                 timeout_s: float = 10.0, max_records: int = 200_000,
                 consumer_factory: Callable[[], Any] | None = None):
        self._kwargs = client_kwargs
        self._topic = topic
        self._margin_s = margin_s
        self._timeout_s = timeout_s
        self._max_records = max_records
        self._factory = consumer_factory
        self._consumer: Any = None

    def _open(self) -> Any:
        if self._consumer is None:
            if self._factory is not None:
                self._consumer = self._factory()
            else:
                from kafka import KafkaConsumer

                timeout_ms = int(self._timeout_s * 1000)
                self._consumer = KafkaConsumer(
                    **self._kwargs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                    request_timeout_ms=max(timeout_ms, 1000) + 500, bootstrap_timeout_ms=timeout_ms,
                    reconnect_backoff_ms=50, reconnect_backoff_max_ms=1000,
                )
        return self._consumer

    def __call__(self, cmd: RejectCommand, since: float) -> str | None:
        try:
            return self._lookup(cmd, since)
        except Exception:
            self.close()  # a fresh consumer next time
            raise

    def _lookup(self, cmd: RejectCommand, since: float) -> str | None:
        import json

        from kafka import TopicPartition

        deadline = time.monotonic() + self._timeout_s

        def left_ms() -> int:
            return max(1, int((deadline - time.monotonic()) * 1000))

        consumer = self._open()
        parts = consumer.partitions_for_topic(self._topic)
        if not parts:
            raise SinkError(f"no partition metadata for {self._topic}")
        tps = [TopicPartition(self._topic, n) for n in sorted(parts)]
        consumer.assign(tps)  # the same partitions again keep their pause state: resumed below
        start_ms = max(0, int((since - self._margin_s) * 1000))
        starts = consumer.offsets_for_times({tp: start_ms for tp in tps}, timeout_ms=left_ms())
        ends = consumer.end_offsets(tps, timeout_ms=left_ms())
        todo: dict[Any, int] = {}
        for tp in tps:
            at = starts.get(tp)
            if at is not None and at.offset < ends[tp]:
                consumer.seek(tp, at.offset)
                todo[tp] = ends[tp]
            # None: no record at or after start_ms in this partition
        consumer.pause(*[tp for tp in tps if tp not in todo])
        consumer.resume(*todo)
        key, read = cmd.item_id.encode(), 0
        while todo:
            left = deadline - time.monotonic()
            if left <= 0 or read >= self._max_records:
                raise SinkError(
                    f"delivered lookup of {cmd.command_id} on {self._topic} not finished after {read} records "
                    f"(bounds {self._timeout_s}s, {self._max_records} records)")
            batches = consumer.poll(timeout_ms=int(min(left, 1.0) * 1000), max_records=5000)
            for tp, records in batches.items():
                end = todo.get(tp)
                if end is None:
                    continue
                for rec in records:
                    if rec.offset >= end:
                        break
                    read += 1
                    if rec.key != key:
                        continue
                    try:
                        found = json.loads(rec.value).get("command_id")
                    except Exception:  # noqa: BLE001 - a foreign record on the topic is not ours
                        continue
                    if found == cmd.command_id:
                        where = f"{self._topic}[{tp.partition}]@{rec.offset}"
                        log.info("reject command %s already on %s (timestamp %s, %d record(s) read)",
                                 cmd.command_id, where, rec.timestamp, read)
                        return where
            for tp in list(todo):
                if consumer.position(tp, timeout_ms=left_ms()) >= todo[tp]:
                    del todo[tp]
                    consumer.pause(tp)
        log.info("reject command %s not on %s since %.3f (%d record(s) read)", cmd.command_id,
                 self._topic, since - self._margin_s, read)
        return None

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001 - best effort
                log.exception("closing the delivered-lookup consumer failed")
            self._consumer = None


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
        delivered: Callable[[RejectCommand, float], str | None] | None = None,
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
        self._delivered = delivered
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._todo: list[RejectCommand] = []
        self._inflight: list[_Pending] = []
        self._unmarked: list[_Pending] = []
        self.sent = 0
        self.suppressed = 0
        self.resent = 0
        self.takeovers = 0
        self.found_delivered = 0
        self.lookup_failures = 0

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

    def _pending_value(self, p: _Pending) -> str:
        return f"{p.cmd.frame_id}|pending|{self._now()}|{_claim_since(p.claim):.3f}"

    def _claim(self, cmds: Sequence[RejectCommand]) -> tuple[list[_Pending], list[RejectCommand]]:
        pipe = self._redis.pipeline(transaction=False)
        keys = [reject_claim_key(self._prefix, c.line_id, c.item_id) for c in cmds]
        now = self._now()
        for c, k in zip(cmds, keys, strict=True):
            self._scripts["claim"](keys=[k], args=[c.frame_id, now, self._takeover, self._ttl], client=pipe)
        got = pipe.execute()
        claimed: list[_Pending] = []
        busy: list[RejectCommand] = []
        for c, k, (verdict, value, *prev) in zip(cmds, keys, got, strict=True):
            verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
            value = value.decode() if isinstance(value, bytes) else value
            if verdict == "send":
                claimed.append(_Pending(c, k, value))
            elif verdict == "takeover":  # its sender may have delivered before dying: look first
                self.takeovers += 1
                old = prev[0].decode() if prev and isinstance(prev[0], bytes) else (prev[0] if prev else "")
                log.warning("reject claim %s (%s) is stale: taken over for frame %s", k, old, c.frame_id)
                claimed.append(_Pending(c, k, value, check=self._delivered is not None))
            elif verdict == "busy":
                busy.append(c)
            else:
                self.suppressed += 1
        return claimed, busy

    def _send(self, p: _Pending) -> bool:
        """Hand ``p``'s command to the producer; False when ``send()`` itself raised (no topic
        metadata within ``max_block_ms``, buffer full, producer closed): nothing reached the
        producer, so the command stays claimed and in flight, and is sent again next flush."""
        key, value = p.cmd.to_kafka()
        if p.attempts:
            self.resent += 1
        p.attempts += 1
        try:
            p.future = self._producer.send(self._topic, key=key, value=value)
        except Exception as exc:  # noqa: BLE001 - kept with its claim and retried, never dropped
            p.future = None
            p.errors.append(f"send raised: {exc!r}")
            log.warning("reject %s for item %s: send to %s raised, retried next flush: %r",
                        p.cmd.command_id, p.cmd.item_id, self._topic, exc)
            return False
        return True

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

    def _check_delivered(self, p: _Pending) -> str:
        """Before (re)sending under a taken-over claim or after a failed send: is the command on the
        topic already? ``delivered`` (mark it sent), ``send`` (not there; the claim, still ours, is
        refreshed), ``keep`` (the lookup failed: nothing sent, the claim stays pending, asked again
        next flush) or ``lost`` (the claim was taken over meanwhile: the other sender owns it)."""
        try:
            found = self._delivered(p.cmd, _claim_since(p.claim))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - cannot tell: never risk a second delivery
            self.lookup_failures += 1
            p.errors.append(f"delivered lookup failed: {exc!r}")
            log.warning("reject %s: cannot tell whether it is on %s already, not sending: %r",
                        p.cmd.command_id, self._topic, exc)
            return "keep"
        if found:
            self.found_delivered += 1
            p.check = False
            log.warning("reject %s for frame %s already delivered (%s): marked sent, not resent",
                        p.cmd.command_id, p.cmd.frame_id, found)
            return "delivered"
        renewed = self._pending_value(p)
        if not self._scripts["renew"](keys=[p.key], args=[p.claim, renewed, self._ttl]):
            log.warning("reject claim %s was taken over while looking up item %s", p.key, p.cmd.item_id)
            self.suppressed += 1
            return "lost"
        p.claim, p.check = renewed, False
        return "send"

    def flush(self) -> list[RejectCommand]:
        """Claim, send and confirm every buffered command; returns the commands newly confirmed
        (sent, or found on the topic already under a claim taken over or after a failed send).

        Raises :class:`SinkError` (a send not confirmed, a mark not written) or
        :class:`ClaimBusy`; what is left stays for the next flush, what is done is not redone."""
        sent: list[RejectCommand] = []
        raised: set[int] = set()
        if self._todo:
            seen = {(p.cmd.line_id, p.cmd.item_id) for p in self._inflight + self._unmarked}
            cmds = []
            for c in self._todo:  # one command per item within the batch too: first frame wins
                if (c.line_id, c.item_id) in seen:
                    self.suppressed += 1
                    continue
                seen.add((c.line_id, c.item_id))
                cmds.append(c)
            claimed, busy = self._claim(cmds)
            self._todo = busy
            self._inflight.extend(claimed)  # before any send: a send that raises keeps its claim
            for p in claimed:
                if not p.check and not self._send(p):
                    raised.add(id(p))
        still: list[_Pending] = []
        for p in self._inflight:
            if id(p) in raised:  # send() raised in this flush: kept (claimed) for the next one
                still.append(p)
                continue
            if p.future is None:
                if p.check:
                    outcome = self._check_delivered(p)
                    if outcome == "keep":
                        still.append(p)
                        continue
                    if outcome == "delivered":
                        self._unmarked.append(p)
                        continue
                    if outcome == "lost":
                        continue
                if not self._send(p):
                    still.append(p)
                    continue
            verdict = self._resolve(p)
            if verdict == "acked":
                self._unmarked.append(p)
            elif verdict == "unknown":
                still.append(p)
            else:  # final failure: resend under the same (refreshed) claim, never release it
                renewed = self._pending_value(p)
                if self._scripts["renew"](keys=[p.key], args=[p.claim, renewed, self._ttl]):
                    # the broker may have stored it all the same: look it up before the resend
                    p.claim, p.future, p.check = renewed, None, self._delivered is not None
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
        try:
            if self._delivered is not None and hasattr(self._delivered, "close"):
                self._delivered.close()
        finally:
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
