"""MVTec AD folder layout: listing, reading and resizing images, masks and ROIs.

Layout (spec §7, docs/interfaces.md)::

    <root>/<cat>/train/good/*.png|jpg|jpeg|bmp
    <root>/<cat>/test/<type>/*.png ...            (<type> = good or a defect type)
    <root>/<cat>/ground_truth/<type>/<name>_mask.png
    <root>/<cat>/roi/default.png                  (optional category ROI)
    <root>/<cat>/roi/<split>/<type>/<name>.png    (optional per-image ROI override)

Errors name the offending path (:class:`~model.errors.DatasetError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model import geometry as geo
from model.errors import DatasetError
from model.geometry import Geometry

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class Sample:
    """One image of the dataset and where its mask / ROI live (if any)."""

    path: Path
    split: str  # "train" or "test"
    defect_type: str  # "good" or a defect folder name
    mask_path: Path | None  # ground truth (test defects only)
    roi_path: Path | None  # per-image ROI override or None

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != "good"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def category_dir(root: str | Path, category: str) -> Path:
    d = Path(root) / category
    if not Path(root).is_dir():
        raise DatasetError(f"dataset root {root} does not exist")
    if not d.is_dir():
        raise DatasetError(f"category folder {d} does not exist")
    return d


def _roi_override(cat: Path, split: str, dtype: str, img: Path) -> Path | None:
    folder = cat / "roi" / split / dtype
    for ext in IMAGE_EXTS:
        p = folder / (img.stem + ext)
        if p.is_file():
            return p
    return None


def list_train(root: str | Path, category: str) -> list[Sample]:
    """Good training images of ``<root>/<category>/train/good``."""
    cat = category_dir(root, category)
    folder = cat / "train" / "good"
    if not folder.is_dir():
        raise DatasetError(f"training folder {folder} does not exist")
    files = _images_in(folder)
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    return [Sample(p, "train", "good", None, _roi_override(cat, "train", "good", p)) for p in files]


def list_test(root: str | Path, category: str) -> list[Sample]:
    """Test images of every ``test/<type>`` folder, with ground-truth masks for defect types."""
    cat = category_dir(root, category)
    test = cat / "test"
    if not test.is_dir():
        raise DatasetError(f"test folder {test} does not exist")
    out: list[Sample] = []
    for tdir in sorted(p for p in test.iterdir() if p.is_dir()):
        for img in _images_in(tdir):
            mask = None
            if tdir.name != "good":
                # cosmetic_masks/: where a defect outside the ROI really is (its ground_truth mask
                # is black because it is no reject); with it, evaluation can tell that the image
                # is good *because* of the ROI instead of calling an empty mask defective
                cands = [d / f"{img.stem}_mask{e}" for d in
                         (cat / "cosmetic_masks" / "test" / tdir.name, cat / "ground_truth" / tdir.name)
                         for e in IMAGE_EXTS]
                mask = next((c for c in cands if c.is_file()), None)
                if mask is None:
                    raise DatasetError(f"ground-truth mask for {img} is missing (looked for {cands[-len(IMAGE_EXTS)]})")
            out.append(Sample(img, "test", tdir.name, mask, _roi_override(cat, "test", tdir.name, img)))
    if not out:
        raise DatasetError(f"no test images under {test}")
    return out


def default_roi_path(root: str | Path, category: str) -> Path | None:
    p = Path(root) / category / "roi" / "default.png"
    return p if p.is_file() else None


def read_image(path: Path, channels: int | None = None) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3) or gray (H, W, 1); ``channels`` None keeps it."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise DatasetError(f"cannot read image {path} (missing, unsupported or corrupt)")
    if data.dtype == np.uint16:
        data = (data // 257).astype(np.uint8)
    if data.dtype != np.uint8:
        raise DatasetError(f"image {path} has unsupported dtype {data.dtype}")
    if data.ndim == 3 and data.shape[2] == 4:
        data = cv2.cvtColor(data, cv2.COLOR_BGRA2BGR)
    if data.ndim == 3:
        data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    else:
        data = data[:, :, None]
    if channels == 1 and data.shape[2] == 3:
        data = cv2.cvtColor(data, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif channels == 3 and data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    return data


def read_binary(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask / ROI PNG as bool (H, W); checks it matches ``shape`` (H, W) if given."""
    data = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if data is None:
        raise DatasetError(f"cannot read mask {path}")
    if shape is not None and data.shape != tuple(shape):
        raise DatasetError(
            f"mask {path} has size {data.shape[1]}x{data.shape[0]} but its image is "
            f"{shape[1]}x{shape[0]}"
        )
    return data > 0


def resize(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize (H, W[, C]) to (size, size[, C]); area for shrinking, linear for growing."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
    out = cv2.resize(img, (size, size), interpolation=interp)
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


#: Input sizes :func:`pick_image_size` chooses from (the ``line`` profile's CPU budget ends at 256).
AUTO_SIZES = (128, 256)


def pick_image_size(samples: list[Sample], probe: int = 16, keep: float = 0.75) -> int:
    """The smallest of :data:`AUTO_SIZES` that keeps at least ``keep`` of the frames' longer side
    (median over the first ``probe`` images), else the largest: a 320×240 tyre gets 256 (scale
    0.8; 128 would halve a 2-px cut to 0.8 px), a 128-px simulated vial 128. Each doubling costs
    about 4× in training and serving time."""
    if not samples:
        raise DatasetError("no images to pick an input size from")
    longer = float(np.median([max(read_image(s.path).shape[:2]) for s in samples[:probe]]))
    for size in AUTO_SIZES:
        if size >= keep * longer:
            return size
    return AUTO_SIZES[-1]


def detect_channels(samples: list[Sample], probe: int = 8) -> int:
    """1 if the first ``probe`` images are grayscale (or RGB with equal channels), else 3."""
    for s in samples[:probe]:
        im = read_image(s.path)
        if im.shape[2] == 3 and not (np.array_equal(im[..., 0], im[..., 1])
                                     and np.array_equal(im[..., 1], im[..., 2])):
            return 3
    return 1


def _fit(path: Path, size: int, geometry: Geometry) -> geo.Fit:
    h, w = read_image(path).shape[:2]
    return geo.fit((h, w), size, geometry)


def load_images(samples: list[Sample], size: int, channels: int, geometry: Geometry = "squash") -> np.ndarray:
    """uint8 (N, size, size, channels), each frame placed by ``geometry`` (:mod:`model.geometry`;
    training and evaluation pass the model's ``cfg.geometry``)."""
    out = []
    for s in samples:
        im = read_image(s.path, channels)
        out.append(geo.image_to_model(im, geo.fit(im.shape[:2], size, geometry)))
    return np.stack(out)


def load_rois(
    samples: list[Sample], size: int, default_roi: Path | None, geometry: Geometry = "squash"
) -> np.ndarray | None:
    """bool (N, size, size) ROIs (override, else default), or None when neither exists and every
    frame fills the square (with letterbox padding, the frame itself is the ROI: padding never
    scores)."""
    fits = [_fit(s.path, size, geometry) for s in samples]
    if default_roi is None and all(s.roi_path is None for s in samples) and all(f.identity or (
            f.inner_h, f.inner_w) == (size, size) for f in fits):
        return None
    default = read_binary(default_roi) if default_roi is not None else None
    out = []
    for s, f in zip(samples, fits, strict=True):
        if s.roi_path is not None:
            r = read_binary(s.roi_path, (f.height, f.width))
        elif default is not None:
            r = default
        else:
            r = None
        if r is None:
            out.append(geo.region_to_model(None, f))
            continue
        if abs(r.shape[0] * f.width - r.shape[1] * f.height) > 0.01 * f.height * f.width:
            raise DatasetError(f"ROI of {s.path} is {r.shape[1]}x{r.shape[0]}, not the shape of its image "
                               f"{f.width}x{f.height}")
        out.append(geo.region_to_model(r, geo.fit(r.shape, size, geometry)))  # the ROI's own resolution
    return np.stack(out)


def load_masks(samples: list[Sample], size: int, geometry: Geometry = "squash") -> np.ndarray:
    """bool (N, size, size) ground truth (all False for good images; area coverage, see
    :func:`model.geometry.truth_to_model`); checks sizes match."""
    out = []
    for s in samples:
        if s.mask_path is None:
            out.append(np.zeros((size, size), bool))
            continue
        shape = read_image(s.path).shape[:2]
        out.append(geo.truth_to_model(read_binary(s.mask_path, shape), geo.fit(shape, size, geometry)))
    return np.stack(out)


def mask_to_size(mask: np.ndarray, size: int) -> np.ndarray:
    """bool (H, W) ground truth → bool (size, size), squashed: area interpolation, then any coverage.

    Nearest-neighbour resizing samples one source pixel per target pixel, so a crack or hole
    thinner than the scale factor can vanish and its defective image would count as good.
    """
    return geo.truth_to_model(mask, geo.fit(mask.shape, size, "squash"))


def load_textures(folder: str | Path, size: int, channels: int, limit: int = 256,
                  seed: int = 0, scale: int = 2) -> np.ndarray:
    """Texture images of a folder tree for synthetic defects: uint8 (T, scale·S, scale·S, C).

    A DTD-style folder has one sub-folder per class: files are drawn round-robin across the
    classes (seeded order), so ``limit`` spans every class instead of the first few in sorted
    order. Each is resized so its short side is ``scale × size`` and centre-cropped square; the
    anomaly generator then takes a random ``size × size`` crop of it per defect.
    """
    d = Path(folder)
    if not d.is_dir():
        raise DatasetError(f"texture folder {d} does not exist")
    by_class: dict[Path, list[Path]] = {}
    for p in sorted(d.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            by_class.setdefault(p.parent, []).append(p)
    if not by_class:
        raise DatasetError(f"no texture images in {d}")
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.array(v, dtype=object))) for v in by_class.values()]
    files: list[Path] = []
    while len(files) < limit and any(queues):
        for q in queues:
            if q and len(files) < limit:
                files.append(q.pop())
    side = scale * size
    out = []
    for p in files:
        im = read_image(p, channels)
        h, w = im.shape[:2]
        f = side / min(h, w)
        nh, nw = max(side, int(round(h * f))), max(side, int(round(w * f)))
        im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        if im.ndim == 2:
            im = im[:, :, None]
        y, x = (nh - side) // 2, (nw - side) // 2
        out.append(im[y:y + side, x:x + side])
    return np.stack(out)
