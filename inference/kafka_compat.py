"""One adjustment to kafka-python's record reader so that a header key that is not UTF-8 cannot
stall a partition.

kafka-python (3.0) decodes every header key with ``bytes.decode("utf-8")`` while it iterates a
record batch inside ``poll()``; a key that is not UTF-8 raises ``CorruptRecordError`` for the whole
batch, and because a fetch from any offset of that batch parses the batch from its first record,
seeking past the bad record does not help: every later poll raises again (measured against the
local broker: the partition stops at that record). Decoding with ``surrogateescape`` instead hands
the record over with its undecodable bytes kept as lone surrogates; the consumer then dead-letters
exactly that record (:func:`has_undecodable_key`, :func:`printable_headers`) and the partition goes on.

The patch rewrites the one ``.decode("utf-8")`` in ``DefaultRecordBatch._read_msg`` and the one
``h_key.encode("utf-8")`` (header size metric) in the fetcher's ``PartitionRecords._unpack_records``
to use ``surrogateescape``; each is applied only when its source text is found exactly once (the
kafka-python version in the lock file), otherwise nothing is patched, with a warning, and the
consumer's generic poll-error path applies.
"""

from __future__ import annotations

import inspect
import logging
import textwrap
from typing import Any

log = logging.getLogger(__name__)

_applied = False


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
