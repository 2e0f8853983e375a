"""Dead letters: the record format of the ``frames.dlq`` topic, and a reader.

A dead letter is one Kafka record on :data:`~ingest.topics.DLQ`:

* **key** — the original key (the camera id, when there was one);
* **value** — the original value, byte for byte (``b""`` when the original had none);
* **headers** — the original headers, verbatim and in order, *followed by* exactly the
  :data:`DLQ_HEADERS` in that order (``dlq.schema_version``, ``dlq.reason``, ``dlq.stage``,
  ``dlq.topic``, ``dlq.partition``, ``dlq.offset``, ``dlq.failed_at``, ``dlq.error_type``,
  ``dlq.field``). Because the dead-letter headers are always the last ones, the original headers
  are recovered exactly even when they themselves contain ``dlq.*`` keys (a dead letter of a
  dead letter), repeated keys or garbage.

``stage`` says where the frame failed (:data:`STAGE_DECODE`, :data:`STAGE_VALIDATE`,
:data:`STAGE_INFERENCE`, :data:`STAGE_SINK` or any other short name); ``reason`` is the error
message (truncated to :data:`MAX_REASON_CHARS`). ``partition``/``offset`` are ``-1`` when unknown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest.errors import DeadLetterError, FrameError
from ingest.topics import DLQ

if TYPE_CHECKING:
    from ingest.settings import KafkaSettings


DLQ_SCHEMA_VERSION = 1
MAX_REASON_CHARS = 2000

STAGE_DECODE = "decode"
STAGE_VALIDATE = "validate"
STAGE_INFERENCE = "inference"
STAGE_SINK = "sink"

#: The dead-letter headers, appended after the original headers in exactly this order.
DLQ_HEADERS: tuple[str, ...] = (
    "dlq.schema_version",
    "dlq.reason",
    "dlq.stage",
    "dlq.topic",
    "dlq.partition",
    "dlq.offset",
    "dlq.failed_at",
    "dlq.error_type",
    "dlq.field",
)

Headers = list[tuple[str, bytes]]


class DeadLetter(BaseModel):
    """One dead-lettered frame: the original record plus why and where it failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = DLQ_SCHEMA_VERSION
    reason: Annotated[str, Field(min_length=1)]
    stage: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    topic: str
    partition: int = Field(ge=-1)
    offset: int = Field(ge=-1)
    failed_at: AwareDatetime
    error_type: str = ""
    field: str = ""
    key: bytes | None = None
    value: bytes
    headers: list[tuple[str, bytes]]
    #: Where the dead letter itself sits on the DLQ topic (set by the reader).
    dlq_partition: int | None = None
    dlq_offset: int | None = None

    @field_validator("schema_version")
    @classmethod
    def _known(cls, v: int) -> int:
        if v != DLQ_SCHEMA_VERSION:
            raise ValueError(f"unknown dead-letter schema version {v}")
        return v

    @field_validator("failed_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)

    @property
    def frame_id(self) -> str | None:
        """The original ``frame_id`` header when there was a readable one."""
        for k, v in self.headers:
            if k == "frame_id":
                return v.decode("utf-8", errors="replace")
        return None


def to_dead_letter(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    reason: str,
    stage: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    *,
    error: BaseException | None = None,
    failed_at: datetime | None = None,
) -> tuple[bytes, Headers]:
    """The ``(value, headers)`` of the dead-letter record for one failed record.

    ``error`` (optional) fills ``error_type`` and, for a :class:`~ingest.errors.FrameError`,
    ``field``. Send the result to :data:`~ingest.topics.DLQ` with the original key.
    """
    stamp = (failed_at or datetime.now(UTC)).astimezone(UTC)
    original: Headers = [(str(k), bytes(v) if v is not None else b"") for k, v in headers or ()]
    field = error.field if isinstance(error, FrameError) else ""
    extra = {
        "dlq.schema_version": str(DLQ_SCHEMA_VERSION),
        "dlq.reason": (reason or "unspecified")[:MAX_REASON_CHARS],
        "dlq.stage": stage,
        "dlq.topic": topic,
        "dlq.partition": str(-1 if partition is None else int(partition)),
        "dlq.offset": str(-1 if offset is None else int(offset)),
        "dlq.failed_at": stamp.isoformat(timespec="microseconds"),
        "dlq.error_type": type(error).__name__ if error is not None else "",
        "dlq.field": field,
    }
    out = original + [(k, extra[k].encode("utf-8")) for k in DLQ_HEADERS]
    return (bytes(value) if value is not None else b""), out


def parse_dead_letter(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    *,
    key: bytes | None = None,
    dlq_partition: int | None = None,
    dlq_offset: int | None = None,
) -> DeadLetter:
    """Parse one record of the DLQ topic; raises :class:`DeadLetterError` if it is not one."""
    headers = list(headers or ())
    n = len(DLQ_HEADERS)
    tail = headers[-n:] if len(headers) >= n else []
    if [k for k, _ in tail] != list(DLQ_HEADERS):
        where = f" at DLQ partition {dlq_partition} offset {dlq_offset}" if dlq_offset is not None else ""
        raise DeadLetterError(f"record{where} does not end with the dead-letter headers {DLQ_HEADERS}")
    try:
        meta = {k[4:]: v.decode("utf-8") for k, v in tail}
        return DeadLetter(
            schema_version=int(meta["schema_version"]),
            reason=meta["reason"],
            stage=meta["stage"],
            topic=meta["topic"],
            partition=int(meta["partition"]),
            offset=int(meta["offset"]),
            failed_at=datetime.fromisoformat(meta["failed_at"]),
            error_type=meta["error_type"],
            field=meta["field"],
            key=key,
            value=value or b"",
            headers=headers[:-n],
            dlq_partition=dlq_partition,
            dlq_offset=dlq_offset,
        )
    except (UnicodeDecodeError, ValueError, ValidationError) as exc:
        raise DeadLetterError(
            f"malformed dead letter at DLQ partition {dlq_partition} offset {dlq_offset}: {exc}"
        ) from exc


def read_dead_letters(
    settings: KafkaSettings | None = None,
    topic: str = DLQ,
    *,
    since: datetime | None = None,
    max_records: int | None = None,
    timeout_s: float = 30.0,
    consumer_kwargs: dict[str, Any] | None = None,
) -> Iterator[DeadLetter]:
    """Yield the dead letters of ``topic`` from the start (or from ``since``) to its current end.

    Reads without a consumer group (nothing is committed), stops at the end offsets taken when it
    starts, or after ``max_records``. A record that is not a dead letter raises
    :class:`DeadLetterError` naming its partition and offset. ``timeout_s`` bounds the wait for
    records known to exist (raises :class:`DeadLetterError` when the broker does not deliver).
    """
    from kafka import KafkaConsumer, TopicPartition

    from ingest.settings import KafkaSettings

    settings = settings or KafkaSettings()
    consumer = KafkaConsumer(
        **settings.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        **(consumer_kwargs or {}),
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise DeadLetterError(f"topic {topic!r} does not exist or has no partitions")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if since is not None:
            ms = int(since.timestamp() * 1000)
            found = consumer.offsets_for_times({tp: ms for tp in tps})
            end = consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, found[tp].offset if found.get(tp) else end[tp])
        else:
            consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if consumer.position(tp) < end[tp]}
        count = 0
        deadline = time.monotonic() + timeout_s
        while remaining:
            if max_records is not None and count >= max_records:
                return
            if time.monotonic() > deadline:
                raise DeadLetterError(
                    f"timed out after {timeout_s}s reading {topic}; partitions not at end: "
                    f"{sorted(tp.partition for tp in remaining)}"
                )
            batch = consumer.poll(timeout_ms=500)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset >= end[tp]:
                        continue
                    yield parse_dead_letter(
                        rec.value, rec.headers, key=rec.key, dlq_partition=rec.partition, dlq_offset=rec.offset
                    )
                    count += 1
                    if max_records is not None and count >= max_records:
                        return
                    deadline = time.monotonic() + timeout_s
            for tp in list(remaining):
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()
