"""Detection and segmentation metrics (spec §7).

AUROC and AP come from scikit-learn. AUPRO follows Bergmann et al., "The MVTec Anomaly Detection
Dataset", IJCV 2021: the per-region overlap (mean over ground-truth connected components, 8-
connectivity, of the fraction of the component above the threshold) integrated over the
pixel false-positive rate from 0 to ``max_fpr`` and divided by ``max_fpr``.
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def _has_both(labels: np.ndarray) -> bool:
    return bool(labels.any() and (~labels).any())


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present."""
    labels = np.asarray(labels, bool).ravel()
    return float(roc_auc_score(labels, np.asarray(scores).ravel())) if _has_both(labels) else float("nan")


def ap(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels, bool).ravel()
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, np.asarray(scores).ravel()))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all thresholds."""
    labels = np.asarray(labels, bool).ravel()
    if not labels.any():
        return float("nan")
    p, r, _ = precision_recall_curve(labels, np.asarray(scores).ravel())
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return float(f1.max())


def aupro(
    masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3, valid: np.ndarray | None = None
) -> float:
    """Normalised area under the PRO curve up to ``max_fpr``.

    ``masks`` bool (N, H, W) ground truth, ``maps`` float (N, H, W) anomaly maps. Exact: every
    distinct map value is a threshold. NaN when there is no defect region or no normal pixel.
    ``valid`` (bool, like ``masks``) restricts the false-positive rate to those pixels (the ROI):
    outside it the map is zero by construction, so counting it would inflate the score.
    """
    masks = np.asarray(masks, bool)
    if valid is not None:
        masks = masks & np.asarray(valid, bool)
    maps = np.asarray(maps, np.float64)
    weights = np.zeros(masks.shape, np.float64)  # 1/(K·|region|) on defect pixels
    comps = []
    for i in range(len(masks)):
        if masks[i].any():
            n, lab = cv2.connectedComponents(masks[i].astype(np.uint8), connectivity=8)
            comps.append((i, n - 1, lab))
    k_total = sum(c[1] for c in comps)
    normal = ~masks if valid is None else ~masks & np.asarray(valid, bool)
    n_normal = int(normal.sum())
    if k_total == 0 or n_normal == 0:
        return float("nan")
    for i, _n, lab in comps:
        sizes = np.bincount(lab.ravel())
        w = np.zeros_like(sizes, dtype=np.float64)
        w[1:] = 1.0 / (k_total * sizes[1:])
        weights[i] = w[lab]
    s = maps.ravel()
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    pro = np.cumsum(weights.ravel()[order])
    fpr = np.cumsum(normal.ravel()[order]) / n_normal
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # last index of each tie group
    pro = np.r_[0.0, pro[last]]
    fpr = np.r_[0.0, fpr[last]]
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr:  # interpolate the PRO value at exactly max_fpr
        j = int(np.searchsorted(fpr, max_fpr))
        if j < len(fpr):
            x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
            yi = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0) if x1 > x0 else y1
            x, y = np.r_[x, max_fpr], np.r_[y, yi]
    return float(np.trapezoid(y, x) / max_fpr)


def rates_at(labels: np.ndarray, scores: np.ndarray, tau: float) -> tuple[float, float]:
    """(false-reject rate among good, escape rate among defective) for decision η ≥ τ."""
    labels = np.asarray(labels, bool)
    rej = np.asarray(scores) >= tau
    frr = float(rej[~labels].mean()) if (~labels).any() else float("nan")
    esc = float((~rej[labels]).mean()) if labels.any() else float("nan")
    return frr, esc


def all_metrics(
    labels: np.ndarray, scores: np.ndarray, masks: np.ndarray, maps: np.ndarray, tau: float,
    max_fpr: float = 0.3, valid: np.ndarray | None = None,
) -> dict[str, float]:
    """Image/pixel AUROC and AP, AUPRO, F1-max, false-reject and escape rates at τ.

    ``valid`` (bool (N, H, W), e.g. the ROI) limits every pixel metric to those pixels.
    """
    frr, esc = rates_at(labels, scores, tau)
    px_masks, px_maps = (masks, maps) if valid is None else (masks[valid], maps[valid])
    return {
        "image_auroc": auroc(labels, scores),
        "pixel_auroc": auroc(px_masks, px_maps),
        "image_ap": ap(labels, scores),
        "pixel_ap": ap(px_masks, px_maps),
        "aupro": aupro(masks, maps, max_fpr, valid=valid),
        "f1_max": f1_max(labels, scores),
        "pixel_f1_max": f1_max(px_masks, px_maps),
        "false_reject_rate": frr,
        "escape_rate": esc,
        "n_images": int(len(labels)),
        "n_defective": int(np.sum(labels)),
    }
