"""What the ingress and the model deployment exchange (in-process types, no Ray import)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inference.contracts import Box


@dataclass
class ModelRequest:
    """One frame for the model. ``image`` uint8 ``(H, W[, C])``; ``roi`` bool ``(H, W)`` or None."""

    frame_id: str
    image: np.ndarray
    roi: np.ndarray | None = None


@dataclass
class ModelReply:
    """The model's answer for one frame (mask already encoded at frame resolution,
    :func:`~inference.contracts.encode_mask`: ``b""`` when no pixel is set)."""

    score: float
    decision: bool
    threshold: float
    model_version: str
    mask_png: bytes
    defect_area: int
    boxes: list[Box] = field(default_factory=list)
    batch_size: int = 1
    batch_started: float = 0.0  # wall clock (time.time()) when the batch's predict began
    model_s: float = 0.0  # the batch's predict
    batch_done: float = 0.0  # wall clock when the batch's replies were ready (masks encoded)


@dataclass
class ModelFailure:
    """The model could not process this one frame."""

    frame_id: str
    reason: str
    error_type: str
