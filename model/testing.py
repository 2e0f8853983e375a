"""Tiny seeded MVTec-layout datasets with planted defects, for tests and demos.

Good parts are a bright disc with a concentric ring pattern on a darker textured plate (the
position jitters by a pixel or two); defect types are ``blob`` (dark ellipse), ``scratch`` (bright
line) and, when ``outside_roi`` is set, ``outside`` (a blob entirely outside the ROI disc). Every
defect has its ground-truth mask. All randomness comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _good(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy = size / 2 + rng.uniform(-1.5, 1.5)
    cx = size / 2 + rng.uniform(-1.5, 1.5)
    r = np.hypot(yy - cy, xx - cx)
    plate = 0.25 + 0.05 * np.sin(xx * 0.9) * np.sin(yy * 0.9)
    disc = 0.65 + 0.08 * np.cos(r * 0.8)
    img = np.where(r < 0.36 * size, disc, plate)
    img = img + rng.normal(0, 0.015, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def roi_disc(size: int, radius: float = 0.36) -> np.ndarray:
    """bool (size, size): the central disc, the ROI of the synthetic product."""
    yy, xx = np.mgrid[0:size, 0:size]
    return np.hypot(yy - size / 2, xx - size / 2) < radius * size


def _plant(rng: np.random.Generator, img: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    if kind in ("blob", "outside"):
        if kind == "blob":
            ang = rng.uniform(0, 2 * np.pi)
            rad = rng.uniform(0, 0.2 * size)
        else:  # in a corner of the plate, well outside the ROI disc (r > 0.36·size)
            ang = np.pi / 4 + np.pi / 2 * int(rng.integers(0, 4)) + rng.uniform(-0.3, 0.3)
            rad = 0.58 * size
        cy = int(size / 2 + rad * np.sin(ang))
        cx = int(size / 2 + rad * np.cos(ang))
        cy, cx = int(np.clip(cy, 4, size - 5)), int(np.clip(cx, 4, size - 5))
        axes = (int(rng.integers(3, 6)), int(rng.integers(2, 5)))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if kind == "outside":
            mask &= (~roi_disc(size, 0.45)).astype(np.uint8)
        value = 0.05 if kind == "blob" else 0.95
    elif kind == "scratch":
        p0 = rng.uniform(0.3, 0.7, 2) * size
        d = rng.normal(size=2)
        d = d / np.linalg.norm(d) * rng.uniform(0.15, 0.3) * size
        p1 = np.clip(p0 + d, 2, size - 3)
        cv2.line(mask, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1, 2)
        value = 1.0
    else:
        raise ValueError(kind)
    m = mask.astype(bool)
    out = img.copy()
    out[m] = value + rng.normal(0, 0.02, m.sum())
    return np.clip(out, 0, 1), m


def _write(path: Path, img: np.ndarray, channels: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    u8 = (img * 255).round().astype(np.uint8)
    if channels == 3:  # tint so the channels differ (a real colour image)
        u8 = np.stack([u8, (u8 * 0.9).astype(np.uint8), (u8 * 0.8).astype(np.uint8)], -1)
        u8 = cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(path), u8)


def make_dataset(
    root: str | Path,
    category: str = "synth",
    *,
    n_train: int = 32,
    n_test_good: int = 10,
    n_test_defect: int = 8,
    size: int = 64,
    channels: int = 1,
    seed: int = 0,
    defect_types: tuple[str, ...] = ("blob", "scratch"),
    outside_roi: int = 0,
    write_roi: bool = False,
) -> Path:
    """Write a dataset under ``root/category`` and return that folder.

    ``outside_roi`` > 0 adds a ``test/outside`` type with defects only outside the ROI disc;
    ``write_roi`` writes ``roi/default.png`` (the disc).
    """
    rng = np.random.default_rng(seed)
    cat = Path(root) / category
    for i in range(n_train):
        _write(cat / "train" / "good" / f"{i:03d}.png", _good(rng, size), channels)
    for i in range(n_test_good):
        _write(cat / "test" / "good" / f"{i:03d}.png", _good(rng, size), channels)
    kinds = list(defect_types) + (["outside"] if outside_roi else [])
    for kind in kinds:
        n = outside_roi if kind == "outside" else n_test_defect
        for i in range(n):
            img, m = _plant(rng, _good(rng, size), kind)
            _write(cat / "test" / kind / f"{i:03d}.png", img, channels)
            gt = cat / "ground_truth" / kind / f"{i:03d}_mask.png"
            gt.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(gt), m.astype(np.uint8) * 255)
    if write_roi:
        (cat / "roi").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(cat / "roi" / "default.png"), roi_disc(size).astype(np.uint8) * 255)
    return cat


def learning_run(out: str | Path, seed: int = 0, threads: int = 1, steps: int = 100,
                 **dataset) -> dict:
    """Generate a tiny dataset, train the 64-px ``line`` model ``steps`` steps on the CPU and
    evaluate it; returns the metrics plus the training report (the learning test's unit of work,
    run in a subprocess so it can pin threads and the CPU code path)."""
    import torch

    from model.config import make_config
    from model.evaluate import evaluate
    from model.pipeline import train_from_folder

    torch.set_num_threads(threads)
    out = Path(out)
    make_dataset(out / "ds", **{"n_train": 32, "n_test_good": 12, "n_test_defect": 8, "size": 64,
                                **dataset})
    cfg = make_config("line", image_size=64, channels=1,
                      train={"seed": seed, "val_every_steps": 50})
    model_dir, report = train_from_folder(cfg, out / "ds", "synth", out / "m", steps=steps,
                                          device="cpu", progress=False)
    m = evaluate(model_dir, out / "ds", "synth", out / "e", device="cpu", n_overlays=1)
    return {**{k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max",
                                 "false_reject_rate", "escape_rate")},
            "steps": report["steps"], "isa": torch.backends.cpu.get_cpu_capability()}
