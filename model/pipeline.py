"""Train on an MVTec-layout folder, calibrate on good validation images, save the artefact."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import artefact, data, plots
from model.calibration import calibrate
from model.config import GRDConfig
from model.predictor import Predictor, cpu_has_native_bf16
from model.trainer import Trainer

log = logging.getLogger(__name__)


def calibrate_for_serving(
    net, cfg: GRDConfig, version: str, images: np.ndarray, rois: np.ndarray | None, device
) -> tuple[artefact.Thresholds, dict[str, Any]]:
    """τ and τ_px on good validation images, scored by the :class:`Predictor` (the serving path:
    fused norms, channels_last) in each precision it may serve in on this device.

    fp32 always; bf16 (CPU with native bf16, or CUDA) and fp16 (CUDA) too. A low precision is
    allowed for ``auto`` serving only when its decisions on the validation images match fp32's and
    η moves less than ``inference.bf16_max_score_diff``; each precision keeps its own thresholds
    (``calibration["thresholds_by_precision"]``), and the artefact's main thresholds are those of
    the precision ``auto`` will pick.
    """
    sc = cfg.scoring
    placeholder = artefact.ModelMeta(version=version, created="", config=cfg,
                                     thresholds=artefact.Thresholds(image=1.0, pixel=1.0))
    dev = torch.device(device)
    modes = ["fp32"]
    if dev.type == "cuda":
        modes += ["bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    elif cpu_has_native_bf16():
        modes.append("bf16")
    roi_list = list(rois) if rois is not None else None
    by_mode, infos, scores = {}, {}, {}
    for mode in modes:
        pred = Predictor(net, placeholder, device=dev, precision=mode)
        out = pred.predict(list(images), roi_list)
        heat = np.stack(out.heatmaps)
        th, info = calibrate(out.scores, heat, sc.target_false_reject, sc.pixel_false_positive,
                             sc.pixel_floor, sc.threshold_method, valid=rois)
        by_mode[mode], infos[mode], scores[mode] = th, info, out.scores
    serve = "fp32"
    info = dict(infos["fp32"])
    for mode in modes[1:]:
        diff = float(np.abs(scores[mode] - scores["fp32"]).max())
        same = bool(((scores[mode] >= by_mode[mode].image)
                     == (scores["fp32"] >= by_mode["fp32"].image)).all())
        info[f"{mode}_max_abs_score_diff"] = diff
        ok = same and diff <= cfg.inference.bf16_max_score_diff
        info[f"{mode}_ok"] = ok
        if ok:
            serve = mode
    info["precision"] = serve
    info["thresholds_by_precision"] = {m: t.model_dump() for m, t in by_mode.items()}
    for k in ("val_false_reject", "val_false_reject_ci95", "val_score_max", "val_score_mean"):
        info[k] = infos[serve][k]
    return by_mode[serve], info


def train_from_folder(
    cfg_or_factory: GRDConfig,
    root: str | Path,
    category: str,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    roi_path: str | Path | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Train, calibrate τ / τ_px on the validation split, save weights + model.json to out_dir.

    ``cfg.channels`` must already be set (see :func:`data.detect_channels`). Returns the model
    directory and a small training report (also written as ``train_log.json``).
    """
    cfg = cfg_or_factory
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = data.list_train(root, category)
    images = data.load_images(samples, cfg.image_size, cfg.channels, cfg.geometry)
    default_roi = Path(roi_path) if roi_path else data.default_roi_path(root, category)
    if roi_path and not Path(roi_path).is_file():
        raise data.DatasetError(f"ROI file {roi_path} does not exist")
    rois = data.load_rois(samples, cfg.image_size, default_roi, cfg.geometry)
    textures = None
    if cfg.anomaly.texture_dir:
        textures = data.load_textures(cfg.anomaly.texture_dir, cfg.image_size, cfg.channels)
    trainer = Trainer(cfg, images, rois, device=device, textures=textures, out_dir=out,
                      progress=progress)
    if resume:
        trainer.load_checkpoint(out)
    history = trainer.fit(epochs=epochs, steps=steps)
    val = trainer.val_idx
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    version = f"{cfg.profile}-{category}-{cfg.image_size}px-{stamp}"
    thresholds, info = calibrate_for_serving(
        trainer.net, cfg, version, images[val], rois[val] if rois is not None else None,
        trainer.device)
    info["val_images"] = [samples[i].path.name for i in val]
    if not info["target_backed_by_data"]:
        log.warning(
            "τ comes from %d good validation images; a %.2g %% false-reject target needs at least "
            "%s of them to be guaranteed (train.val_fraction / more good images). The validation "
            "false-reject rate is %.3g (95 %% interval %.3g–%.3g)", info["n_images"],
            100 * cfg.scoring.target_false_reject, info["images_needed_for_target"],
            info["val_false_reject"], *info["val_false_reject_ci95"])
    artefact.save(trainer.net.cpu(), out, version=version, thresholds=thresholds,
                  calibration=info)
    plots.loss_curves(history.steps, history.val, out / "loss_curves.png")
    report = {
        "version": version, "steps": trainer.step, "n_train": int(len(trainer.train_idx)),
        "n_val": int(len(val)), "thresholds": thresholds.model_dump(),
        "last_losses": history.steps[-1] if history.steps else {},
        "last_val": history.val[-1] if history.val else {},
        "roi": str(default_roi) if default_roi else None, "device": str(trainer.device),
        "precision": trainer.precision,
        "calibration": {k: info[k] for k in (
            "precision", "n_images", "val_false_reject", "val_false_reject_ci95",
            "images_needed_for_target", "target_backed_by_data")},
    }
    (out / "train_log.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("saved model %s to %s (τ=%.4f, τ_px=%.4f)", version, out, thresholds.image,
             thresholds.pixel)
    return out, report


__all__ = ["train_from_folder"]
