"""The simulator's error type (a subclass of the ingest root error)."""

from __future__ import annotations

from ingest.errors import IngestError


class SimulatorError(IngestError):
    """A bad simulator request (unknown recipe or defect type, bad size) or an output path problem."""
