"""Train on an MVTec-layout folder, calibrate on good validation images, save the artefact."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from model import artefact, data, plots
from model.calibration import calibrate
from model.config import GRDConfig
from model.infer import run
from model.predictor import cpu_has_native_bf16
from model.trainer import Trainer

log = logging.getLogger(__name__)


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
    images = data.load_images(samples, cfg.image_size, cfg.channels)
    default_roi = Path(roi_path) if roi_path else data.default_roi_path(root, category)
    if roi_path and not Path(roi_path).is_file():
        raise data.DatasetError(f"ROI file {roi_path} does not exist")
    rois = data.load_rois(samples, cfg.image_size, default_roi)
    textures = None
    if cfg.anomaly.texture_dir:
        textures = data.load_textures(cfg.anomaly.texture_dir, cfg.image_size, cfg.channels)
    trainer = Trainer(cfg, images, rois, device=device, textures=textures, out_dir=out,
                      progress=progress)
    if resume:
        trainer.load_checkpoint(out)
    history = trainer.fit(epochs=epochs, steps=steps)
    val = trainer.val_idx
    val_rois = rois[val] if rois is not None else None
    res = run(trainer.net, images[val], val_rois, device=trainer.device,
              batch_size=cfg.train.batch_size)
    sc = cfg.scoring
    thresholds, info = calibrate(res.scores, res.heat, sc.target_false_reject,
                                 sc.pixel_false_positive, sc.pixel_floor,
                                 sc.threshold_method)
    info["val_images"] = [samples[i].path.name for i in val]
    if trainer.device.type == "cuda" or cpu_has_native_bf16():
        # record whether bf16 inference reproduces the fp32 decisions (Predictor "auto" mode)
        low = run(trainer.net, images[val], val_rois, device=trainer.device,
                  batch_size=cfg.train.batch_size, precision="bf16")
        diff = float(np.abs(low.scores - res.scores).max())
        same = bool(((low.scores >= thresholds.image) == (res.scores >= thresholds.image)).all())
        info["bf16_max_abs_score_diff"] = diff
        info["bf16_ok"] = same and diff <= cfg.inference.bf16_max_score_diff
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    version = f"{cfg.profile}-{category}-{cfg.image_size}px-{stamp}"
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
    }
    (out / "train_log.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("saved model %s to %s (τ=%.4f, τ_px=%.4f)", version, out, thresholds.image,
             thresholds.pixel)
    return out, report


__all__ = ["train_from_folder"]
