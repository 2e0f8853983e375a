"""A stand-in for ``model.predictor.Predictor`` that does no compute (scaling benchmark, tests).

Each ``predict`` call sleeps a fixed ``batch_latency_ms`` whatever the batch size — the shape of a
GPU that is not saturated — so serving overhead and replica scaling can be measured without the
machine's CPUs being the bottleneck. It scores an image by the mean of its ROI pixels / 255 and its
mask is ``image > pixel_threshold * 255`` inside the ROI, so results are deterministic and checkable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from inference.config import StandInModel


class StandInBatch(NamedTuple):
    """Same fields as ``model.predictor.PredictionBatch``."""

    scores: np.ndarray
    decisions: np.ndarray
    masks: list[np.ndarray]
    heatmaps: list[np.ndarray]


class StandInPredictor:
    """Duck-types the parts of ``Predictor`` the model deployment uses."""

    def __init__(self, cfg: StandInModel):
        self._latency_s = cfg.batch_latency_ms / 1000.0
        self.version = cfg.version
        self.image_size = cfg.image_size
        self.channels = cfg.channels
        self.threshold = cfg.threshold
        self.pixel_threshold = cfg.pixel_threshold
        self.fault: str | None = None  # ModelTuning.fault: "raise" | "nan" | "hang" | None

    def set_thresholds(self, image: float | None = None, pixel: float | None = None) -> None:
        if image is not None:
            self.threshold = float(image)
        if pixel is not None:
            self.pixel_threshold = float(pixel)

    def predict(
        self, images: Sequence[np.ndarray], rois: Sequence[np.ndarray | None] | None = None
    ) -> StandInBatch:
        t_end = time.perf_counter() + self._latency_s
        while self.fault == "hang":  # blocks the predict thread until a reconfigure lifts it
            time.sleep(0.05)
        if self.fault == "raise":
            raise RuntimeError("stand-in fault injection: predict raises")
        scores, masks, heat = [], [], []
        for i, img in enumerate(images):
            g = np.asarray(img, dtype=np.float32)
            if g.ndim == 3:
                g = g.mean(axis=2)
            g = g / 255.0
            roi = None if rois is None else rois[i]
            r = np.ones(g.shape, bool) if roi is None else np.asarray(roi) > 0
            h = np.where(r, g, 0.0).astype(np.float32)
            scores.append(float(h[r].mean()) if r.any() else 0.0)
            masks.append(h >= self.pixel_threshold)
            heat.append(h)
        s = np.asarray(scores, dtype=np.float32)
        if self.fault == "nan":
            s = np.full_like(s, np.nan)
        rest = t_end - time.perf_counter()
        if rest > 0:
            time.sleep(rest)
        return StandInBatch(s, s >= self.threshold, masks, heat)
