"""Thresholds from good validation images only (spec §6): τ for a target false-reject rate and τ_px.

τ is the (1 − target_false_reject) quantile of η over good validation images (``higher``
interpolation, so on a small set it is the largest η, i.e. no validation part is rejected).
A handful of validation images cannot pin down a 0.5 % tail, so by default (``max``) τ is the
larger of that and a one-sided Student-t prediction bound on η at the same level,
``μ + t_{n−1}(1 − p)·s·√(1 + 1/n)``, which widens as n shrinks (decision; a bound on logit(η)
was tried and rejected: near 0 it explodes and put τ above every defect);
τ_px is the (1 − pixel_false_positive) quantile of M̂ over their pixels, but at least
``pixel_floor``. Test data is never used here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.artefact import Thresholds


def t_bound(scores: np.ndarray, p: float) -> float:
    """One-sided ``p`` prediction bound for one new score under a normal model with unknown
    variance: ``mean + t_{n−1}(p)·sd·√(1 + 1/n)`` (Student-t, n − 1 degrees of freedom)."""
    from scipy.stats import t as student_t

    s = np.asarray(scores, np.float64)
    n = s.size
    if n < 2:
        return float(s.max())
    return float(s.mean() + student_t.ppf(p, n - 1) * s.std(ddof=1) * np.sqrt(1 + 1 / n))


def image_threshold(good_scores: np.ndarray, target_false_reject: float,
                    method: str = "empirical") -> float:
    """τ just above the (1 − target) quantile of good scores, so at most that share is ≥ τ."""
    s = np.asarray(good_scores, np.float64)
    if s.size == 0:
        raise ValueError("no validation scores to calibrate on")
    q = float(np.quantile(s, 1.0 - target_false_reject, method="higher"))
    if method in ("t_bound", "max"):
        fit = t_bound(s, 1.0 - target_false_reject)
        q = fit if method == "t_bound" else max(q, fit)
    return float(np.nextafter(np.float32(q), np.float32(np.inf)))  # η ≥ τ rejects; keep q good


def pixel_threshold(good_maps: np.ndarray, pixel_false_positive: float, floor: float) -> float:
    m = np.asarray(good_maps, np.float32).ravel()
    q = float(np.quantile(m, 1.0 - pixel_false_positive, method="higher"))
    return float(max(np.nextafter(np.float32(q), np.float32(np.inf)), floor))


def calibrate(
    good_scores: np.ndarray,
    good_maps: np.ndarray,
    target_false_reject: float,
    pixel_false_positive: float,
    pixel_floor: float = 0.1,
    method: str = "max",
) -> tuple[Thresholds, dict[str, Any]]:
    """Return thresholds and a record of how they were obtained (stored in the artefact)."""
    t = image_threshold(good_scores, target_false_reject, method)
    tp = pixel_threshold(good_maps, pixel_false_positive, pixel_floor)
    info = {
        "source": "good validation images",
        "n_images": int(len(good_scores)),
        "target_false_reject": target_false_reject,
        "pixel_false_positive": pixel_false_positive,
        "pixel_floor": pixel_floor,
        "method": method,
        "val_false_reject": float(np.mean(np.asarray(good_scores) >= t)),
        "val_score_max": float(np.max(good_scores)),
        "val_score_mean": float(np.mean(good_scores)),
    }
    return Thresholds(image=t, pixel=tp), info
