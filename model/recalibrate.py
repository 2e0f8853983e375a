"""Re-fit τ / τ_px of a trained artefact on good images collected later, without retraining.

The common case in a plant: a model trained on a few dozen good parts, then a week of production
whose good parts (the ones that passed inspection by people, or a sample of them) are many more
than the validation split ever was. :func:`recalibrate` scores them with the serving
:class:`~model.predictor.Predictor` in every precision the artefact may serve in on this machine
(the same path training calibrates on, :func:`model.pipeline.calibrate_for_serving`), fits the
thresholds for the target false-reject rate, and writes the artefact again with the same weights,
a new version and the record of what the new τ rests on: how many good images, the false-reject
rate they show with its 95 % Clopper–Pearson interval, whether their number can back the target
without assuming a score distribution, and — when defective images are given — the escape rate at
τ with its interval. The previous calibrations are kept in ``calibration["history"]``.

Images of any size are resized to the model's input exactly as serving does
(:func:`model.predictor.to_model_input`); ROIs likewise (:func:`model.predictor.roi_to_model`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model import artefact, data
from model.calibration import clopper_pearson
from model.errors import ModelError
from model.geometry import Geometry

log = logging.getLogger(__name__)

#: Calibration keys copied into each history entry (the rest is per-precision detail).
_HISTORY_KEYS = ("version", "source", "n_images", "target_false_reject", "val_false_reject",
                 "val_false_reject_ci95", "images_needed_for_target", "target_backed_by_data")


class RecalibrationError(ModelError):
    """The good (or defective) images, the ROI or the target cannot be used."""


@dataclass(frozen=True)
class Recalibration:
    """What :func:`recalibrate` did: the artefact written and its operating point."""

    model_dir: Path
    version: str
    previous_version: str
    precision: str
    image_threshold: float
    previous_image_threshold: float
    pixel_threshold: float
    n_good: int
    target_false_reject: float
    false_reject: float
    false_reject_ci95: tuple[float, float]
    images_needed_for_target: int | None
    target_backed_by_data: bool
    n_defective: int = 0
    escape: float | None = None
    escape_ci95: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["model_dir"] = str(self.model_dir)
        return d


def _images(folder: Path, channels: int, what: str) -> list[np.ndarray]:
    if not folder.is_dir():
        raise RecalibrationError(f"{what} folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in data.IMAGE_EXTS)
    if not paths:
        raise RecalibrationError(f"{what} folder {folder} holds no images ({', '.join(data.IMAGE_EXTS)})")
    return [data.read_image(p, channels) for p in paths]


def _model_rois(roi_path: Path | None, images: list[np.ndarray], size: int, geometry: Geometry) -> np.ndarray | None:
    """bool (N, size, size) ROIs at model size, False in letterbox padding (None: no ROI and every
    frame fills the square), checked against every image's shape."""
    from model.predictor import roi_to_model

    roi = data.read_binary(roi_path) if roi_path is not None else None
    for i, im in enumerate(images):
        if roi is not None and im.shape[:2] != roi.shape:
            raise RecalibrationError(
                f"ROI {roi_path} is {roi.shape[1]}x{roi.shape[0]} but image {i} is {im.shape[1]}x{im.shape[0]}")
    out = np.stack([roi_to_model(roi, im.shape[:2], size, geometry) > 0.5 for im in images])
    return None if roi is None and out.all() else out


def _to_model(images: list[np.ndarray], size: int, channels: int, geometry: Geometry) -> np.ndarray:
    from model.predictor import to_model_input

    return np.stack([to_model_input(im, size, channels, geometry) for im in images])


def recalibrate(
    model_dir: str | Path,
    good: str | Path,
    out_dir: str | Path | None = None,
    *,
    target_false_reject: float | None = None,
    roi: str | Path | None = None,
    defective: str | Path | None = None,
    device: str | None = None,
) -> Recalibration:
    """Re-fit the thresholds of ``model_dir`` on the good images under ``good`` (see module doc).

    ``out_dir`` None rewrites ``model_dir`` in place (``model.json`` only; the weights are not
    touched); otherwise the artefact is copied there first. ``target_false_reject`` None keeps the
    artefact's ``scoring.target_false_reject``. ``defective``: a folder of defective images to
    measure the escape rate at the new τ (never used to choose it).
    """
    from model.pipeline import calibrate_for_serving
    from model.predictor import Predictor, pick_device

    src = Path(model_dir)
    net, meta = artefact.load(src)
    cfg = meta.config
    if target_false_reject is not None:
        if not 0 < target_false_reject < 1:
            raise RecalibrationError(f"target_false_reject must be in (0, 1), got {target_false_reject}")
        cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(
            update={"target_false_reject": target_false_reject})})
    size, channels = cfg.image_size, cfg.channels
    raw_good = _images(Path(good), channels, "good")
    rois = _model_rois(Path(roi) if roi else None, raw_good, size, cfg.geometry)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    version = f"{meta.version.split('+recal')[0]}+recal{stamp}"
    dev = pick_device(device)
    thresholds, info = calibrate_for_serving(net.to(dev), cfg, version, _to_model(raw_good, size, channels, cfg.geometry),
                                             rois, dev)
    info["source"] = f"{len(raw_good)} good images from {Path(good).resolve()}"
    info["recalibrated_from"] = meta.version
    info["recalibrated_at"] = stamp
    history = list(meta.calibration.get("history", []))
    history.append({"version": meta.version, **{k: meta.calibration.get(k) for k in _HISTORY_KEYS[1:]},
                    "image_threshold": meta.thresholds.image})
    info["history"] = history
    n_bad, escape, escape_ci = 0, None, None
    if defective is not None:
        raw_bad = _images(Path(defective), channels, "defective")
        bad_rois = _model_rois(Path(roi) if roi else None, raw_bad, size, cfg.geometry)
        placeholder = meta.model_copy(update={"config": cfg, "thresholds": thresholds, "version": version,
                                              "calibration": info})
        pred = Predictor(net, placeholder, device=dev, precision=info["precision"])
        scores = np.asarray(pred.predict(list(_to_model(raw_bad, size, channels, cfg.geometry)),
                                         list(bad_rois) if bad_rois is not None else None).scores)
        n_bad = len(scores)
        missed = int(np.sum(scores < thresholds.image))
        escape, escape_ci = missed / n_bad, clopper_pearson(missed, n_bad)
        info.update(defective_images=n_bad, expected_escape=escape, expected_escape_ci95=list(escape_ci),
                    defective_source=str(Path(defective).resolve()))
    out = src if out_dir is None else Path(out_dir)
    if out != src:
        if out.exists() and any(out.iterdir()):
            raise RecalibrationError(f"output directory {out} exists and is not empty")
        shutil.copytree(src, out, dirs_exist_ok=True)
    new_meta = meta.model_copy(update={"version": version, "config": cfg, "thresholds": thresholds,
                                       "calibration": info})
    (out / artefact.META).write_text(new_meta.model_dump_json(indent=2) + "\n")
    if not info["target_backed_by_data"]:
        log.warning("τ rests on %d good images; a %.2g %% false-reject target needs %s to be guaranteed",
                    info["n_images"], 100 * cfg.scoring.target_false_reject, info["images_needed_for_target"])
    return Recalibration(
        model_dir=out, version=version, previous_version=meta.version, precision=info["precision"],
        image_threshold=thresholds.image,
        previous_image_threshold=meta.thresholds.image, pixel_threshold=thresholds.pixel,
        n_good=len(raw_good), target_false_reject=cfg.scoring.target_false_reject,
        false_reject=info["val_false_reject"], false_reject_ci95=tuple(info["val_false_reject_ci95"]),
        images_needed_for_target=info["images_needed_for_target"],
        target_backed_by_data=bool(info["target_backed_by_data"]),
        n_defective=n_bad, escape=escape, escape_ci95=escape_ci,
    )


def summary(r: Recalibration) -> str:
    """A few lines for a person: the operating point first."""
    lo, hi = r.false_reject_ci95
    lines = [
        f"model {r.model_dir} -> version {r.version} (was {r.previous_version})",
        f"tau {r.previous_image_threshold:.5g} -> {r.image_threshold:.5g}  (tau_px {r.pixel_threshold:.4g})",
        f"false rejects on {r.n_good} good images: {r.false_reject:.2%} (95 % CI {lo:.2%}-{hi:.2%}), "
        f"target {r.target_false_reject:.2%}"
        + ("" if r.target_backed_by_data else f"; {r.images_needed_for_target} good images needed to back it"),
    ]
    if r.escape is not None and r.escape_ci95 is not None:
        lines.append(f"escapes on {r.n_defective} defective images: {r.escape:.2%} "
                     f"(95 % CI {r.escape_ci95[0]:.2%}-{r.escape_ci95[1]:.2%})")
    return "\n".join(lines)


def to_json(r: Recalibration) -> str:
    return json.dumps(r.as_dict())
