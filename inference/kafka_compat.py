"""Two adjustments to kafka-python 3.0, each for a way it can stall the line.

**A header key that is not UTF-8** (:func:`tolerate_non_utf8_header_keys`). kafka-python (3.0)
decodes every header key with ``bytes.decode("utf-8")`` while it iterates a record batch inside
``poll()``; a key that is not UTF-8 raises ``CorruptRecordError`` for the whole batch, and
because a fetch from any offset of that batch parses the batch from its first record, seeking past
the bad record does not help: every later poll raises again (measured against the
local broker: the partition stops at that record). Decoding with ``surrogateescape`` instead hands
the record over with its undecodable bytes kept as lone surrogates; the consumer then dead-letters
exactly that record (:func:`has_undecodable_key`, :func:`printable_headers`) and the partition goes on.

The patch rewrites the one ``.decode("utf-8")`` in ``DefaultRecordBatch._read_msg`` and the one
``h_key.encode("utf-8")`` (header size metric) in the fetcher's ``PartitionRecords._unpack_records``
to use ``surrogateescape``; each is applied only when its source text is found exactly once (as in
kafka-python 3.0.x), otherwise nothing is patched, with a warning, and the
consumer's generic poll-error path applies.

**A rebalance that is forgotten** (:func:`keep_rejoin_pending`). The group leader starts a rebalance
when the metadata of a subscribed topic changes (the topic became known after the first join,
partitions were added). kafka-python's ``ConsumerCoordinator.need_rejoin`` reports that change by
comparing the leader's last assignment with the metadata, without setting ``rejoin_needed``; the
join it starts recomputes the assignment (so the two agree again) while JoinGroup/SyncGroup are
still in flight. When ``poll``'s timer runs out before SyncGroup returns (a ``poll_timeout_ms`` of
100 ms on a loaded machine), the next ``poll`` asks ``need_rejoin`` again, gets False, and never
looks at the finished join: the member stays in the group, heartbeating, with **no partitions,
for good**. Measured against the local broker with 3 busy CPU loops beside it: 10 of 120 fresh
consumers stuck (and the ingress of a CI run). The Java client fixed the same gap in KAFKA-9815 by
calling ``requestRejoin()`` there; :func:`keep_rejoin_pending` does the same: whenever
``need_rejoin`` says True it also sets ``rejoin_needed``, which only a completed join clears. A
join that finished after ``poll`` gave up is then sent again (kafka-python's own behaviour for a
stale join) instead of forgotten. With it: 0 of 160 stuck in the same drill.
"""

from __future__ import annotations

import inspect
import logging
import textwrap
from typing import Any

log = logging.getLogger(__name__)

_applied = False
_PATCHED = "_grdline_keeps_rejoin_pending"


def _rewrite(owner: Any, name: str, module: Any, old: str, new: str) -> Any | None:
    """``owner.name`` recompiled with ``old`` replaced by ``new`` (once), or None."""
    try:
        src = textwrap.dedent(inspect.getsource(getattr(owner, name)))
    except (OSError, TypeError) as exc:
        log.warning("kafka-python %s not patched (no source: %r)", name, exc)
        return None
    if src.count(old) != 1:
        log.warning("kafka-python %s not patched: %s not found exactly once", name, old)
        return None
    namespace: dict[str, Any] = {}
    exec(compile(src.replace(old, new), module.__file__, "exec"), module.__dict__, namespace)  # noqa: S102
    return namespace[name]


def tolerate_non_utf8_header_keys() -> bool:
    """Apply the patch once per process; True when it is in effect."""
    global _applied
    if _applied:
        return True
    from kafka.consumer import fetcher
    from kafka.record import default_records

    records = fetcher.Fetcher.PartitionRecords
    read = _rewrite(default_records.DefaultRecordBatch, "_read_msg", default_records,
                    '.decode("utf-8")', '.decode("utf-8", "surrogateescape")')
    unpack = _rewrite(records, "_unpack_records", fetcher,
                      'h_key.encode("utf-8")', 'h_key.encode("utf-8", "surrogateescape")')
    if read is None or unpack is None:
        return False
    default_records.DefaultRecordBatch._read_msg = read
    records._unpack_records = unpack
    _applied = True
    return True


def keep_rejoin_pending() -> bool:
    """Make a rebalance that ``need_rejoin`` asked for stick until a join completes (see the module
    doc). Idempotent; True when in effect, False (with a warning) where this kafka-python has no
    ``request_rejoin`` to call."""
    from kafka.coordinator.consumer import ConsumerCoordinator

    original = ConsumerCoordinator.need_rejoin
    if getattr(original, _PATCHED, False):
        return True
    if not callable(getattr(ConsumerCoordinator, "request_rejoin", None)):
        log.warning("kafka-python ConsumerCoordinator has no request_rejoin: need_rejoin not patched")
        return False

    def need_rejoin(self: Any) -> bool:
        needed = original(self)
        if needed:
            self.request_rejoin()
        return needed

    setattr(need_rejoin, _PATCHED, True)
    need_rejoin.__doc__ = original.__doc__
    ConsumerCoordinator.need_rejoin = need_rejoin
    return True


def has_undecodable_key(headers: list[tuple[str, Any]]) -> str | None:
    """The first header key that was not valid UTF-8 (escaped for display), or None."""
    for k, _ in headers:
        try:
            k.encode("utf-8")
        except UnicodeEncodeError:
            return _escape(k)
    return None


def printable_headers(headers: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Headers whose keys can be written again (undecodable bytes as ``\\xNN`` text)."""
    return [(_escape(k), v) for k, v in headers]


def _escape(key: str) -> str:
    try:
        key.encode("utf-8")
        return key
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
