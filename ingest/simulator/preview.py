"""A contact sheet to judge the simulator at a glance: every type, its mask, its ROI, a zoom.

One row per type (good, each defect type, cosmetic outside the ROI); per sample three tiles: the
camera image, an overlay (defect mask in red, ROI outline in green, cosmetic defects in orange),
and a 4x zoom around the defect (around a meniscus for good parts).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ingest.simulator.config import COSMETIC, DEFECT_TYPES, GOOD
from ingest.simulator.errors import SimulatorError
from ingest.simulator.render import RenderedPart, get_renderer

ROWS: tuple[str, ...] = (GOOD, *DEFECT_TYPES, COSMETIC)


def contact_sheet(
    seed: int = 0, size: int = 256, channels: int = 1, samples: int = 2, recipe: str = "vials"
) -> np.ndarray:
    """The sheet as an RGB uint8 image ``(len(ROWS) * S, samples * 3 * S, 3)``."""
    renderer = get_renderer(recipe, size, channels, 0)
    rows = []
    for r, dtype in enumerate(ROWS):
        tiles = []
        for k in range(samples):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(r, k)))
            part = renderer.render(renderer.sample_item(rng, dtype), renderer.sample_view(rng))
            tiles += _tiles(part, rng)
        row = np.hstack(tiles)
        label = dtype if dtype != COSMETIC else "cosmetic (outside ROI: good)"
        _label(row, label, size)
        rows.append(row)
    return np.vstack(rows)


def write_contact_sheet(out: str | Path, **kwargs) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(contact_sheet(**kwargs), cv2.COLOR_RGB2BGR)):
        raise SimulatorError(f"{out}: could not write the contact sheet")
    return out


def _rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()


def _tiles(part: RenderedPart, rng: np.random.Generator) -> list[np.ndarray]:
    s = part.image.shape[0]
    img = _rgb(part.image)
    over = img.copy()
    if part.defect_mask is not None:
        color = np.array([255, 0, 0] if part.reject else [255, 150, 0], np.float32)
        m = part.defect_mask
        over[m] = (0.45 * over[m] + 0.55 * color).astype(np.uint8)
    contours, _ = cv2.findContours(
        part.roi.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    cv2.drawContours(over, contours, -1, (0, 220, 0), 1)
    if part.defect_mask is not None and part.defect_mask.any():
        ys, xs = np.nonzero(part.defect_mask)
        cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    else:
        ys, xs = np.nonzero(part.roi)
        cy, cx = int(ys.mean()), int(xs[int(rng.integers(len(xs)))])
    half = max(s // 8, 8)
    cy, cx = int(np.clip(cy, half, s - half)), int(np.clip(cx, half, s - half))
    crop = img[cy - half : cy + half, cx - half : cx + half]
    zoom = cv2.resize(crop, (s, s), interpolation=cv2.INTER_CUBIC)
    cv2.rectangle(over, (cx - half, cy - half), (cx + half - 1, cy + half - 1), (80, 160, 255), 1)
    return [img, over, zoom]


def _label(row: np.ndarray, text: str, size: int) -> None:
    scale = max(size / 512, 0.35)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(row, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(
        row, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
    )
