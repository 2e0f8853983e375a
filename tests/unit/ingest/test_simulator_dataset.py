"""Dataset generation: MVTec layout, ROI files, manifest truth, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.simulator import COSMETIC, DEFECT_TYPES, SimulatorError, generate_dataset
from ingest.simulator.dataset import TEST_TYPES, load_manifest, split_counts

SIZE = 64
N_TRAIN, N_TEST = 4, 20


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    generate_dataset(root, "vials", N_TRAIN, N_TEST, seed=3, size=SIZE)
    return root / "vials"


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path, dataset):
    generate_dataset(tmp_path / "a", "vials", N_TRAIN, N_TEST, seed=3, size=SIZE)
    generate_dataset(tmp_path / "b", "vials", N_TRAIN, N_TEST, seed=4, size=SIZE)
    same, other = _digest(tmp_path / "a" / "vials"), _digest(tmp_path / "b" / "vials")
    ref = _digest(dataset)
    assert same == ref
    assert set(other) == set(ref)
    changed = [
        k for k in ref if k.endswith(".png") and "roi/default" not in k and other[k] != ref[k]
    ]
    assert len(changed) > 0.9 * (len(ref) - 2)


def test_mvtec_layout_and_roi_files(dataset):
    counts = split_counts(N_TEST)
    assert sum(counts.values()) == N_TEST and counts["good"] >= counts["particle"]
    assert len(list((dataset / "train" / "good").glob("*.png"))) == N_TRAIN
    assert (dataset / "roi" / "default.png").is_file()
    for t, n in counts.items():
        names = sorted(p.stem for p in (dataset / "test" / t).glob("*.png"))
        assert len(names) == n, t
        for name in names:
            assert (dataset / "roi" / "test" / t / f"{name}.png").is_file()
            gt = dataset / "ground_truth" / t / f"{name}_mask.png"
            assert gt.is_file() == (t != "good")
    for name in ("000", "001"):
        img = cv2.imread(str(dataset / "train" / "good" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (SIZE, SIZE) and img.dtype == np.uint8
        assert (dataset / "roi" / "train" / "good" / f"{name}.png").is_file()


def _read(dataset: Path, rel: str) -> np.ndarray:
    return cv2.imread(str(dataset / rel), cv2.IMREAD_UNCHANGED) > 0


def test_manifest_truth_matches_files(dataset):
    m = load_manifest(dataset)
    assert (m.seed, m.size, m.channels, m.category) == (3, SIZE, 1, "vials")
    assert len(m.images) == N_TRAIN + N_TEST
    assert {i.type for i in m.images if i.split == "test"} == set(TEST_TYPES)
    default = _read(dataset, m.roi_default)
    for im in m.images:
        assert (dataset / im.path).is_file()
        roi = _read(dataset, im.roi)
        assert roi.any() and not (roi & ~default).any()
        if im.type == "good":
            assert im.label == 0 and im.mask is None and im.defect_area_px == 0
            continue
        gt = _read(dataset, im.mask)
        real = _read(dataset, im.defect_mask)
        assert real.sum() == im.defect_area_px > 0
        x0, y0, x1, y1 = im.defect_bbox
        ys, xs = np.nonzero(real)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        if im.type == COSMETIC:
            assert im.label == 0 and not gt.any()  # not a reject: all-black ground truth
            assert im.defect_mask.startswith("cosmetic_masks/")
            assert not (real & roi).any()
        else:
            assert im.type in DEFECT_TYPES and im.label == 1
            assert np.array_equal(gt, real) and (gt & roi).any()
    raw = json.loads((dataset / "manifest.json").read_text())
    assert raw["schema_version"] == 1 and raw["images"][0]["path"] == "train/good/000.png"


def test_refuses_to_overwrite_unless_asked(tmp_path):
    generate_dataset(tmp_path, "vials", 1, 2, seed=0, size=SIZE)
    with pytest.raises(SimulatorError, match="not empty"):
        generate_dataset(tmp_path, "vials", 1, 2, seed=0, size=SIZE)
    generate_dataset(tmp_path, "vials", 2, 2, seed=1, size=SIZE, overwrite=True)
    assert len(list((tmp_path / "vials" / "train" / "good").glob("*.png"))) == 2
    foreign = tmp_path / "other"
    (foreign / "sub").mkdir(parents=True)
    with pytest.raises(SimulatorError, match="no simulator manifest"):
        generate_dataset(tmp_path, "other", 1, 1, size=SIZE, overwrite=True)
    assert (foreign / "sub").is_dir()


def test_rgb_dataset(tmp_path):
    generate_dataset(tmp_path, "vials", 1, 9, seed=0, size=SIZE, channels=3)
    img = cv2.imread(
        str(tmp_path / "vials" / "test" / "particle" / "000.png"), cv2.IMREAD_UNCHANGED
    )
    assert img.shape == (SIZE, SIZE, 3)
