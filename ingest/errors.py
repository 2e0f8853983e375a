"""Errors of the ingest package: one root, and typed frame errors that name the offending field.

:class:`IngestError` is the root; everything ingest raises on purpose derives from it.
:class:`FrameError` (also a ``ValueError``) is raised by the frame codec for a message that breaks
the contract; ``.field`` names the header (``"width"``, ``"captured_at"``...) or ``"value"`` for the
image bytes, ``.reason`` says what is wrong. A consumer catches ``FrameError`` and dead-letters the
record with ``str(exc)`` as the reason (see :mod:`ingest.dlq`).
"""

from __future__ import annotations


class IngestError(Exception):
    """Root of every error the ingest package raises on purpose."""


class FrameError(IngestError, ValueError):
    """A frame (headers + value) that breaks the frame contract.

    ``field`` is the header name, or ``"value"`` for the encoded image bytes, or ``"image"`` for
    the array handed to the encoder.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def __reduce__(self):  # keep field/reason when pickled (Ray moves exceptions between processes)
        return (type(self), (self.field, self.reason))


class MissingHeaderError(FrameError):
    """A required header is absent."""


class InvalidHeaderError(FrameError):
    """A header is present but its value is malformed, repeated or out of range."""


class UnknownSchemaVersionError(InvalidHeaderError):
    """``schema_version`` is well-formed but not one this code understands."""


class UnsupportedEncodingError(InvalidHeaderError):
    """``encoding`` names no codec of the contract (jpeg, png, raw)."""


class ClockSkewError(InvalidHeaderError):
    """``captured_at`` is a valid time but outside what the line's clock accepts: further in the
    future than the tolerance, or older than the maximum age (a camera clock that is wrong).

    Dead-lettered with this reason, never silently clamped (bounds: :class:`~ingest.settings.ClockSettings`).
    """


class SizeLimitError(FrameError):
    """A declared size (width, height, decoded bytes) or the value itself exceeds the limits.

    Raised before anything of that size is allocated, so a hostile header costs nothing.
    """


class SizeMismatchError(FrameError):
    """Declared width/height/channels/dtype disagree with the image bytes or the array."""


class UndecodableImageError(FrameError):
    """The value is not a decodable image of the declared encoding (corrupt, truncated, empty)."""


class DeadLetterError(IngestError):
    """A record on the dead-letter topic that is not a well-formed dead letter."""


class PublishError(IngestError):
    """A frame the broker did not accept (too large, timed out, not authorised...).

    Carries the frame id so that the failure can be traced to one camera frame.
    """

    def __init__(self, frame_id: str, topic: str, reason: str) -> None:
        self.frame_id = frame_id
        self.topic = topic
        self.reason = reason
        super().__init__(f"frame {frame_id} -> {topic}: {reason}")

    def __reduce__(self):
        return (type(self), (self.frame_id, self.topic, self.reason))


class ArchiveError(IngestError):
    """A recording archive that is missing, malformed, or fails its checksums."""
