"""Thresholds from good validation images only (spec §6): τ for a target false-reject rate and τ_px.

τ is the (1 − target_false_reject) quantile of η over good validation images (``higher``
interpolation, so on a small set it is the largest η, i.e. no validation part is rejected).
A handful of validation images cannot pin down a 0.5 % tail, so by default (``max``) τ is the
larger of that and a one-sided Student-t prediction bound on η at the same level,
``μ + t_{n−1}(1 − p)·s·√(1 + 1/n)``, which widens as n shrinks (decision; a bound on logit(η)
was tried and rejected: near 0 it explodes and put τ above every defect);
τ_px is the (1 − pixel_false_positive) quantile of M̂ over their ROI pixels, but at least
``pixel_floor``. Test data is never used here. How many good images a target needs to be
guaranteed without assuming a distribution is :func:`images_needed`; ``grdline train`` warns
when the validation split is smaller.
"""

from __future__ import annotations

import math
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


def pixel_threshold(good_maps: np.ndarray, pixel_false_positive: float, floor: float,
                    valid: np.ndarray | None = None) -> float:
    """τ_px from good maps over ``valid`` pixels only (the ROI): the zeros outside it would
    otherwise dilute the quantile, so the in-ROI false-positive rate would be the target divided
    by the ROI's share of the image."""
    m = np.asarray(good_maps, np.float32)
    m = m[np.asarray(valid, bool)] if valid is not None else m.ravel()
    if m.size == 0:
        raise ValueError("no ROI pixels to calibrate τ_px on")
    q = float(np.quantile(m, 1.0 - pixel_false_positive, method="higher"))
    return float(max(np.nextafter(np.float32(q), np.float32(np.inf)), floor))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval of a rate seen as ``k`` of ``n``."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def images_needed(target_false_reject: float, confidence: float = 0.95) -> int:
    """Good validation images needed so that τ just above the largest of their scores keeps the
    false-reject rate at or below the target with ``confidence``, whatever the score distribution:
    P(rate > p) = (1 − p)^n ≤ 1 − confidence (order statistics; 598 for 0.5 % at 95 %)."""
    if target_false_reject <= 0:
        raise ValueError("a zero false-reject target cannot be guaranteed by any number of images")
    return int(math.ceil(math.log(1 - confidence) / math.log(1 - target_false_reject)))


def calibrate(
    good_scores: np.ndarray,
    good_maps: np.ndarray,
    target_false_reject: float,
    pixel_false_positive: float,
    pixel_floor: float = 0.1,
    method: str = "max",
    valid: np.ndarray | None = None,
) -> tuple[Thresholds, dict[str, Any]]:
    """Return thresholds and a record of how they were obtained (stored in the artefact).

    ``valid``: bool (N, S, S) ROI pixels τ_px is fitted on (None = every pixel). The record says
    how far the validation set can vouch for the target: the false-reject rate seen on it with a
    95 % Clopper–Pearson interval, and how many good images a distribution-free guarantee needs.
    """
    t = image_threshold(good_scores, target_false_reject, method)
    tp = pixel_threshold(good_maps, pixel_false_positive, pixel_floor, valid)
    n = int(len(good_scores))
    k = int(np.sum(np.asarray(good_scores) >= t))
    needed = images_needed(target_false_reject) if target_false_reject > 0 else None
    info = {
        "source": "good validation images",
        "n_images": int(len(good_scores)),
        "target_false_reject": target_false_reject,
        "pixel_false_positive": pixel_false_positive,
        "pixel_floor": pixel_floor,
        "method": method,
        "val_false_reject": k / n,
        "val_false_reject_ci95": list(clopper_pearson(k, n)),
        "images_needed_for_target": needed,
        "target_backed_by_data": needed is not None and n >= needed,
        "val_score_max": float(np.max(good_scores)),
        "val_score_mean": float(np.mean(good_scores)),
    }
    return Thresholds(image=t, pixel=tp), info
