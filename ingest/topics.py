"""Kafka topic names and their defaults: the one home for them.

Every other module imports these names; none spells a topic as a literal.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

FRAMES = "frames"
#: Where ``grdline replay`` writes by default: a replay is decided like live frames (into the
#: replay results namespace) but never lands on the live topic unless the operator asks for it
#: (``grdline replay --topic frames --to-live``).
FRAMES_REPLAY = "frames.replay"
REJECTS = "rejects"
DLQ = "frames.dlq"

#: How long the frames topics keep a frame: one day. Also the default oldest capture time the
#: line accepts (:class:`ingest.settings.ClockSettings`).
FRAMES_RETENTION_MS = 24 * 3600 * 1000

#: Largest frame the broker, topics and producers accept (bytes). Frames are images of up to a few
#: MiB; the broker's ``message.max.bytes`` (deploy/local) is set to the same value.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: The dead-letter topic takes a frame of MAX_MESSAGE_BYTES plus the dead-letter headers (reason,
#: stage, coordinates: ingest.dlq), so its limit has that much room on top (the broker's own
#: ``message.max.bytes`` in deploy/local is MAX_MESSAGE_BYTES + 64 KiB as well). A producer of
#: dead letters sets ``max_request_size`` to this.
DLQ_MAX_MESSAGE_BYTES = MAX_MESSAGE_BYTES + 64 * 1024


class TopicSpec(BaseModel):
    """How a topic is created (partitions, retention, size limit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int = Field(default=24 * 3600 * 1000, ge=-1)
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=1024)

    def configs(self) -> dict[str, str]:
        """Topic-level configs for the admin client (``retention.ms``, ``max.message.bytes``)."""
        return {"retention.ms": str(self.retention_ms), "max.message.bytes": str(self.max_message_bytes)}


DEFAULT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(name=FRAMES, partitions=4, retention_ms=FRAMES_RETENTION_MS),
    TopicSpec(name=FRAMES_REPLAY, partitions=4, retention_ms=FRAMES_RETENTION_MS),
    TopicSpec(name=REJECTS, partitions=1, retention_ms=7 * 24 * 3600 * 1000),
    TopicSpec(name=DLQ, partitions=1, retention_ms=7 * 24 * 3600 * 1000,
              max_message_bytes=DLQ_MAX_MESSAGE_BYTES),
)
