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
kafka-python :data:`WRITTEN_FOR`, which ``constraints.txt`` pins).

**A patch that does not apply stops the replica.** Where the installed kafka-python's source no
longer has the text a patch rewrites (or the method it calls), :class:`KafkaPatchError` is raised,
naming the version found, the version the patches were written for and the patch: both stalls
above would come back silently if the replica carried on unpatched. :func:`apply_patches` is called
from the ingress consumer's constructor, so the error fails the replica at start-up (Serve reports
the deployment as failed with this message), not later on the poll thread.

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
import textwrap
from typing import Any

#: the kafka-python release the patches below were written and tested against (one home: the
#: pin in ``constraints.txt`` is checked against it by tests/unit/test_constraints.py)
WRITTEN_FOR = "3.0.12"

_applied = False
_PATCHED = "_grdline_keeps_rejoin_pending"


class KafkaPatchError(RuntimeError):
    """A kafka-python patch of this module does not apply to the installed kafka-python."""

    def __init__(self, patch: str, problem: str):
        self.patch, self.found, self.expected = patch, installed_version(), WRITTEN_FOR
        super().__init__(
            f"kafka-python {self.found} is installed, but the patch {patch} (inference.kafka_compat) "
            f"was written for kafka-python {WRITTEN_FOR}: {problem}. Install kafka-python=={WRITTEN_FOR} "
            "(pip install -c constraints.txt) or port the patch to this version; the replica does not "
            "start unpatched, since the stall the patch prevents would come back silently"
        )


def installed_version() -> str:
    """The installed kafka-python's version (``kafka.__version__``)."""
    import kafka

    return str(getattr(kafka, "__version__", "unknown"))


def _rewrite(owner: Any, name: str, module: Any, old: str, new: str, patch: str,
             src: str | None = None) -> Any:
    """``owner.name`` recompiled with ``old`` replaced by ``new``; :class:`KafkaPatchError` unless
    ``old`` occurs exactly once in its source (``src``: that source, given by tests)."""
    qualname = f"{getattr(owner, '__qualname__', owner)}.{name}"
    if src is None:
        try:
            src = textwrap.dedent(inspect.getsource(getattr(owner, name)))
        except (AttributeError, OSError, TypeError) as exc:
            raise KafkaPatchError(patch, f"no source of {qualname} ({exc!r})") from exc
    found = src.count(old)
    if found != 1:
        raise KafkaPatchError(patch, f"{old!r} occurs {found} times in {qualname}, not once")
    namespace: dict[str, Any] = {}
    exec(compile(src.replace(old, new), module.__file__, "exec"), module.__dict__, namespace)  # noqa: S102
    return namespace[name]


def apply_patches() -> None:
    """Both patches, once per process; :class:`KafkaPatchError` when either does not apply."""
    tolerate_non_utf8_header_keys()
    keep_rejoin_pending()


def tolerate_non_utf8_header_keys() -> bool:
    """Apply the patch once per process; True when it is in effect, :class:`KafkaPatchError`
    when this kafka-python's source does not have the text it rewrites."""
    global _applied
    if _applied:
        return True
    from kafka.consumer import fetcher
    from kafka.record import default_records

    records = fetcher.Fetcher.PartitionRecords
    patch = "tolerate_non_utf8_header_keys"
    read = _rewrite(default_records.DefaultRecordBatch, "_read_msg", default_records,
                    '.decode("utf-8")', '.decode("utf-8", "surrogateescape")', patch)
    unpack = _rewrite(records, "_unpack_records", fetcher,
                      'h_key.encode("utf-8")', 'h_key.encode("utf-8", "surrogateescape")', patch)
    default_records.DefaultRecordBatch._read_msg = read
    records._unpack_records = unpack
    _applied = True
    return True


def keep_rejoin_pending() -> bool:
    """Make a rebalance that ``need_rejoin`` asked for stick until a join completes (see the module
    doc). Idempotent; True when in effect, :class:`KafkaPatchError` where this kafka-python has no
    ``need_rejoin`` to wrap or no ``request_rejoin`` to call."""
    from kafka.coordinator.consumer import ConsumerCoordinator

    return _wrap_need_rejoin(ConsumerCoordinator)


def _wrap_need_rejoin(coordinator: Any) -> bool:
    """:func:`keep_rejoin_pending` on ``coordinator`` (a class; tests pass one without the API)."""
    patch = "keep_rejoin_pending"
    original = getattr(coordinator, "need_rejoin", None)
    if not callable(original):
        raise KafkaPatchError(patch, f"{coordinator.__qualname__} has no need_rejoin to wrap")
    if getattr(original, _PATCHED, False):
        return True
    if not callable(getattr(coordinator, "request_rejoin", None)):
        raise KafkaPatchError(patch, f"{coordinator.__qualname__} has no request_rejoin to call")

    def need_rejoin(self: Any) -> bool:
        needed = original(self)
        if needed:
            self.request_rejoin()
        return needed

    setattr(need_rejoin, _PATCHED, True)
    need_rejoin.__doc__ = original.__doc__
    coordinator.need_rejoin = need_rejoin
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
