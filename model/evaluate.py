"""Evaluation of an artefact on an MVTec-layout test set (spec §7).

Writes ``metrics.json``, ``scores.csv`` (per image), ``summary.md``, ``roc.png`` and
``overlays/*.png`` to the output folder. Labels come from the test folders (any type but ``good``
is defective); ground-truth masks are resized with area interpolation (:func:`data.mask_to_size`).
When the dataset has ROIs they are applied at inference (M̂ ⊙ R) and a defect entirely outside the
ROI is not a reject (its ground truth is M ⊙ R); a second pass without ROI at inference is
reported under ``without_roi`` (including how many outside-ROI defects stay below τ).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from model import data, plots
from model.artefact import load
from model.infer import run
from model.metrics import all_metrics
from model.predictor import pick_device


def _clean(obj: Any) -> Any:
    """NaN → None so metrics.json is strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _per_type(types: np.ndarray, labels, scores, masks, maps, tau, valid=None) -> dict[str, Any]:
    out = {}
    good = types == "good"
    for t in sorted(set(types.tolist()) - {"good"}):
        sel = good | (types == t)
        out[t] = all_metrics(labels[sel], scores[sel], masks[sel], maps[sel], tau,
                             valid=None if valid is None else valid[sel])
        out[t]["n_type"] = int((types == t).sum())
    return out


def image_labels(types: np.ndarray, gt: np.ndarray, rois: np.ndarray | None) -> np.ndarray:
    """bool (N,): defective = the test folder is not ``good`` — never inferred from a resized mask.

    With ROIs, a defect whose ground truth lies wholly outside the ROI is not a reject, so that
    image counts as good (a defect folder without masks stays defective).
    """
    labels = np.asarray(types) != "good"
    if rois is not None:
        has_gt = gt.reshape(len(gt), -1).any(1)
        inside = (gt & rois).reshape(len(gt), -1).any(1)
        labels &= ~(has_gt & ~inside)
    return labels


def write_scores(path: Path, samples, types, labels, scores, tau: float) -> None:
    """Per-image scores next to metrics.json: file, type, label, η, decision at τ."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "defect_type", "defective", "score", "rejected"])
        for s, t, lab, sc in zip(samples, types, labels, scores, strict=True):
            w.writerow([f"{t}/{s.path.name}", t, int(lab), f"{float(sc):.6f}", int(sc >= tau)])


def evaluate(
    model_dir: str | Path,
    root: str | Path,
    category: str,
    out_dir: str | Path,
    *,
    device: str | None = None,
    batch_size: int = 16,
    roi_path: str | Path | None = None,
    use_roi: bool = True,
    n_overlays: int = 4,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate and write the report files; returns the metrics dict (also in metrics.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net, meta = load(model_dir)
    cfg = meta.config
    dev = pick_device(device)
    net = net.to(dev)
    samples = data.list_test(root, category)
    S, C = cfg.image_size, cfg.channels
    images = data.load_images(samples, S, C, cfg.geometry)
    gt = data.load_masks(samples, S, cfg.geometry)
    types = np.array([s.defect_type for s in samples])
    default_roi = Path(roi_path) if roi_path else data.default_roi_path(root, category)
    rois = data.load_rois(samples, S, default_roi, cfg.geometry) if use_roi else None
    # the thresholds calibrated in the precision evaluated (model.pipeline keeps one per precision)
    th = meta.calibration.get("thresholds_by_precision", {}).get(precision)
    th = th or meta.thresholds.model_dump()
    tau = float(th["image"])

    res = run(net, images, rois, device=dev, batch_size=batch_size, precision=precision,
              keep_recon=True)
    masks = gt & rois if rois is not None else gt
    labels = image_labels(types, gt, rois)
    # With an ROI, pixel metrics count only pixels inside it: outside, the map is zero by
    # construction and would make even an untrained model look good.
    metrics: dict[str, Any] = all_metrics(labels, res.scores, masks, res.heat, tau, valid=rois)
    metrics["per_defect_type"] = _per_type(types, labels, res.scores, masks, res.heat, tau, rois)
    metrics["threshold"] = tau
    metrics["pixel_threshold"] = float(th["pixel"])
    metrics["model_version"] = meta.version
    metrics["category"] = category
    metrics["roi_at_inference"] = rois is not None
    metrics["precision"] = precision
    if rois is not None:
        plain = run(net, images, None, device=dev, batch_size=batch_size, precision=precision)
        raw_labels = types != "good"
        outside = raw_labels & ~labels  # defects wholly outside the ROI
        wo = all_metrics(raw_labels, plain.scores, gt, plain.heat, tau)
        wo["per_defect_type"] = _per_type(types, raw_labels, plain.scores, gt, plain.heat, tau)
        metrics["without_roi"] = wo
        metrics["outside_roi"] = {
            "n": int(outside.sum()),
            "below_tau_with_roi": float((res.scores[outside] < tau).mean()) if outside.any() else None,
            "below_tau_without_roi": float((plain.scores[outside] < tau).mean())
            if outside.any() else None,
        }
    (out / "metrics.json").write_text(json.dumps(_clean(metrics), indent=2) + "\n")
    write_scores(out / "scores.csv", samples, types, labels, res.scores, tau)

    curves = {}
    if labels.any() and (~labels).any():
        f, t, _ = roc_curve(labels, res.scores)
        curves["image"] = (f, t, metrics["image_auroc"])
    if masks.any():
        px = rois if rois is not None else np.ones_like(masks)
        f, t, _ = roc_curve(masks[px], res.heat[px])
        curves["pixel"] = (f, t, metrics["pixel_auroc"])
    if curves:
        plots.roc_curves(curves, out / "roc.png")
    ov = out / "overlays"
    ov.mkdir(exist_ok=True)
    assert res.x_hat is not None
    for t in sorted(set(types.tolist())):
        for i in np.flatnonzero(types == t)[:n_overlays]:
            name = f"{t}_{samples[i].path.stem}"
            plots.overlay(images[i], res.x_hat[i], res.heat[i], gt[i],
                          f"{t}/{samples[i].path.name}  η={res.scores[i]:.3f}  τ={tau:.3f}",
                          ov / f"{name}.png")
    (out / "summary.md").write_text(summary_markdown(metrics))
    return metrics


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


#: The operating point at τ first (what the line feels), ranking metrics second.
KEYS = ("escape_rate", "false_reject_rate", "image_auroc", "pixel_auroc", "image_ap", "pixel_ap", "aupro",
        "f1_max")


def summary_markdown(m: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation: {m['category']} — model {m['model_version']}",
        "",
        f"τ = {m['threshold']:.4f}, τ_px = {m['pixel_threshold']:.4f}, ROI at inference: "
        f"{m['roi_at_inference']}, precision: {m['precision']}",
        "",
        "| scope | " + " | ".join(KEYS) + " |",
        "|---" * (len(KEYS) + 1) + "|",
        "| all | " + " | ".join(_fmt(m[k]) for k in KEYS) + " |",
    ]
    for t, mt in m["per_defect_type"].items():
        lines.append(f"| {t} | " + " | ".join(_fmt(mt[k]) for k in KEYS) + " |")
    if "without_roi" in m:
        w = m["without_roi"]
        lines.append("| all, no ROI at inference | " + " | ".join(_fmt(w[k]) for k in KEYS) + " |")
        o = m["outside_roi"]
        lines += ["", f"Defects entirely outside the ROI: {o['n']}; below τ with ROI: "
                  f"{_fmt(o['below_tau_with_roi'])}, without ROI: {_fmt(o['below_tau_without_roi'])}"]
    return "\n".join(lines) + "\n"

