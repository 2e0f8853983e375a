"""PNG figures (matplotlib, Agg backend): loss curves, ROC curves, defect overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_curves(steps: list[dict[str, float]], val: list[dict[str, float]], path: Path) -> Path:
    """Training losses per step (and validation losses) as a 2×2 figure."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    x = [s["step"] for s in steps]
    panels = [("g", "generator L_G"), ("c", "discriminator BCE"), ("s", "segmenter focal"),
              ("con", "contextual L_con")]
    for ax, (key, title) in zip(axes.ravel(), panels, strict=True):
        if steps:
            ax.plot(x, [s[key] for s in steps], lw=0.7, alpha=0.6, label="train")
        vkey = {"g": "val_g", "c": "val_c", "s": "val_s"}.get(key)
        if vkey and val and vkey in val[0]:
            ax.plot([v["step"] for v in val], [v[vkey] for v in val], "o-", ms=3, label="val")
        ax.set_title(title)
        ax.set_xlabel("step")
        if key in ("s",):
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """``curves``: name → (fpr, tpr, auc)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def overlay(
    image: np.ndarray, recon: np.ndarray, heat: np.ndarray, gt: np.ndarray, title: str, path: Path
) -> Path:
    """Image | reconstruction | heat map over the image | ground truth, one PNG."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    cmap = "gray" if image.shape[-1] == 1 else None
    img = image[..., 0] if image.shape[-1] == 1 else image
    rec = recon[..., 0] if recon.shape[-1] == 1 else recon
    axes[0].imshow(img, cmap=cmap, vmin=0, vmax=255)
    axes[0].set_title("image")
    axes[1].imshow(rec, cmap=cmap, vmin=0, vmax=255)
    axes[1].set_title("reconstruction")
    axes[2].imshow(img, cmap=cmap, vmin=0, vmax=255)
    axes[2].imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    axes[2].set_title("anomaly map")
    axes[3].imshow(gt, cmap="gray", vmin=0, vmax=1)
    axes[3].set_title("ground truth")
    for a in axes:
        a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
