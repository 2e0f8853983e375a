"""Write a simulated dataset in the MVTec AD layout, with ROI files and a truth manifest.

Layout under ``<out_root>/<category>/`` (names ``000.png``, zero-padded to the count)::

    train/good/<name>.png                   good parts only
    test/<type>/<name>.png                  type: good, particle, spot, scratch, crack, bubble,
                                            short_fill, deformed, cosmetic_outside_roi
    ground_truth/<type>/<name>_mask.png     white = defect; every test type except good.
                                            cosmetic_outside_roi masks are all black: those parts
                                            are good (their defect lies outside the ROI)
    cosmetic_masks/<split>/<type>/<name>_mask.png
                                            where a cosmetic defect really is (not a reject)
    roi/default.png                         the recipe's fixed camera ROI (jitter envelope)
    roi/<split>/<type>/<name>.png           the ROI of that image (moves with the part)
    manifest.json                           per-image truth (:class:`DatasetManifest`)

Every image is drawn from its own ``SeedSequence(seed, spawn_key=(split, type, index))``, so the
same seed gives byte-identical files (PNG via OpenCV, JSON with sorted keys, no timestamps) and
one image does not depend on how many others were generated.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from ingest.simulator.config import COSMETIC, DEFECT_TYPES, GOOD, get_recipe
from ingest.simulator.errors import SimulatorError
from ingest.simulator.render import MASK_THRESHOLD, RenderedPart, get_renderer

SCHEMA_VERSION = 1
GENERATOR_VERSION = "1.0"
TEST_TYPES: tuple[str, ...] = (GOOD, *DEFECT_TYPES, COSMETIC)
_TYPE_WEIGHT = {GOOD: 2}  # good test images get two shares, every other type one


class ImageTruth(BaseModel):
    """Truth of one dataset image; paths are relative to the category folder."""

    model_config = ConfigDict(extra="forbid")
    path: str
    split: str  # train | test
    type: str  # folder name under the split
    label: int  # 1 = reject (a defect inside the ROI), 0 = good (incl. cosmetic outside ROI)
    defect_kind: str | None  # what was painted (particle, spot, scratch, crack, bubble, ...)
    mask: str | None  # ground_truth/... (the evaluation mask; None for good)
    defect_mask: str | None  # where the defect really is: the GT mask, or cosmetic_masks/...
    roi: str
    defect_area_px: int
    defect_bbox: list[int] | None  # x0, y0, x1, y1 (exclusive)
    fills_px: list[float]  # per-vial meniscus row (part coordinates)
    pose: dict[str, float]  # tx, ty (px), angle_deg, scale


class DatasetManifest(BaseModel):
    """``manifest.json`` of a simulated dataset."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    generator: str = "grdline.ingest.simulator"
    generator_version: str = GENERATOR_VERSION
    category: str
    recipe: str
    seed: int
    size: int
    channels: int
    mask_threshold: float
    roi_default: str
    images: list[ImageTruth]


def split_counts(n: int, types: tuple[str, ...] = TEST_TYPES) -> dict[str, int]:
    """Share ``n`` test images out over ``types`` (good weighs 2), largest remainder first."""
    weights = np.array([_TYPE_WEIGHT.get(t, 1) for t in types], float)
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return {t: int(c) for t, c in zip(types, counts, strict=True)}


def generate_dataset(
    out_root: str | Path,
    category: str = "vials",
    n_train: int = 200,
    n_test: int = 90,
    seed: int = 0,
    size: int = 256,
    channels: int = 1,
    *,
    recipe: str = "vials",
    test_types: tuple[str, ...] = TEST_TYPES,
    overwrite: bool = False,
) -> DatasetManifest:
    """Generate ``n_train`` good training images and ``n_test`` test images; return the manifest.

    Refuses to write into a non-empty ``<out_root>/<category>`` unless ``overwrite`` (which then
    deletes it first, and only if it holds a simulator manifest).
    """
    for t in test_types:
        if t not in TEST_TYPES:
            raise SimulatorError(f"unknown test type {t!r}; known: {', '.join(TEST_TYPES)}")
    rec = get_recipe(recipe)
    root = Path(out_root) / category
    _prepare(root, overwrite)
    renderer = get_renderer(rec.name, size, channels, 0)
    images: list[ImageTruth] = []
    width = max(3, len(str(max(n_train, n_test) - 1)))
    jobs = [("train", GOOD, i) for i in range(n_train)]
    for t, c in split_counts(n_test, test_types).items():
        jobs += [("test", t, i) for i in range(c)]
    for split, dtype, i in jobs:
        name = f"{i:0{width}d}"
        ss = np.random.SeedSequence(
            seed, spawn_key=(0 if split == "train" else 1, TEST_TYPES.index(dtype), i)
        )
        part = _render_valid(renderer, np.random.default_rng(ss), dtype, f"{split}/{dtype}/{name}")
        images.append(_write(root, split, dtype, name, part))
    roi_default = "roi/default.png"
    _imwrite(root / roi_default, renderer.tpl.roi_fixed.astype(np.uint8) * 255)
    manifest = DatasetManifest(
        category=category,
        recipe=rec.name,
        seed=seed,
        size=size,
        channels=channels,
        mask_threshold=MASK_THRESHOLD,
        roi_default=roi_default,
        images=images,
    )
    (root / "manifest.json").write_text(manifest.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return manifest


def load_manifest(category_dir: str | Path) -> DatasetManifest:
    path = Path(category_dir) / "manifest.json"
    try:
        return DatasetManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SimulatorError(f"{path}: cannot read the manifest: {exc}") from exc


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise SimulatorError(f"{root} is not empty (pass overwrite to replace it)")
        if not (root / "manifest.json").is_file():
            raise SimulatorError(f"{root} holds no simulator manifest; refusing to delete it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def _render_valid(renderer, rng: np.random.Generator, dtype: str, what: str) -> RenderedPart:
    """Render until the truth matches the folder: rejects for defect types, not for the rest."""
    for _ in range(10):
        part = renderer.render(renderer.sample_item(rng, dtype), renderer.sample_view(rng))
        if dtype == GOOD:
            return part
        nonempty = part.defect_mask is not None and bool(part.defect_mask.any())
        if nonempty and part.reject == (dtype != COSMETIC):
            return part
    raise SimulatorError(f"{what}: no valid {dtype} part in 10 draws")


def _write(root: Path, split: str, dtype: str, name: str, part: RenderedPart) -> ImageTruth:
    rel = f"{split}/{dtype}/{name}.png"
    roi_rel = f"roi/{split}/{dtype}/{name}.png"
    _imwrite(root / rel, part.image)
    _imwrite(root / roi_rel, part.roi.astype(np.uint8) * 255)
    mask_rel = defect_rel = None
    s = part.image.shape[0]
    if dtype != GOOD:
        mask_rel = f"ground_truth/{dtype}/{name}_mask.png"
        gt = part.defect_mask if part.reject else np.zeros((s, s), bool)
        _imwrite(root / mask_rel, gt.astype(np.uint8) * 255)
        defect_rel = mask_rel
        if not part.reject:
            defect_rel = f"cosmetic_masks/{split}/{dtype}/{name}_mask.png"
            _imwrite(root / defect_rel, part.defect_mask.astype(np.uint8) * 255)
    bbox = None
    area = 0
    if part.defect_mask is not None:
        ys, xs = np.nonzero(part.defect_mask)
        area = int(len(ys))
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    v = part.view
    return ImageTruth(
        path=rel,
        split=split,
        type=dtype,
        label=int(part.reject),
        defect_kind=part.defect_kind,
        mask=mask_rel,
        defect_mask=defect_rel,
        roi=roi_rel,
        defect_area_px=area,
        defect_bbox=bbox,
        fills_px=[round(float(f), 3) for f in part.item.fills],
        pose={
            "tx": round(v.tx, 4),
            "ty": round(v.ty, 4),
            "angle_deg": round(v.angle_deg, 4),
            "scale": round(v.scale, 6),
        },
    )


def _imwrite(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise SimulatorError(f"{path}: could not write the image")
