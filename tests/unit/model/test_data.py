import cv2
import numpy as np
import pytest

from model import data
from model.errors import DatasetError
from model.testing import make_dataset


@pytest.fixture()
def ds(tmp_path):
    make_dataset(tmp_path, n_train=4, n_test_good=2, n_test_defect=2, size=32)
    return tmp_path


def test_listing_and_loading(ds):
    tr = data.list_train(ds, "synth")
    te = data.list_test(ds, "synth")
    assert len(tr) == 4 and {s.defect_type for s in te} == {"good", "blob", "scratch"}
    assert all(s.mask_path is not None for s in te if s.is_anomalous)
    imgs = data.load_images(tr, 48, 3)  # any input size is resized; gray replicated to RGB
    assert imgs.shape == (4, 48, 48, 3) and imgs.dtype == np.uint8
    assert data.detect_channels(tr) == 1
    masks = data.load_masks(te, 48)
    assert masks.shape == (len(te), 48, 48) and masks[[s.is_anomalous for s in te]].any()


def test_jpeg_bmp_and_rgb(tmp_path):
    make_dataset(tmp_path, n_train=2, n_test_good=1, n_test_defect=1, size=32, channels=3)
    folder = tmp_path / "synth" / "train" / "good"
    img = cv2.imread(str(folder / "000.png"))
    cv2.imwrite(str(folder / "100.jpg"), img)
    cv2.imwrite(str(folder / "101.bmp"), img)
    tr = data.list_train(tmp_path, "synth")
    assert len(tr) == 4 and data.detect_channels(tr) == 3
    assert data.load_images(tr, 32, 3).shape == (4, 32, 32, 3)


def test_clear_errors(ds, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        data.list_train(ds, "nope")
    with pytest.raises(DatasetError, match="does not exist"):
        data.list_train(tmp_path / "no_root", "synth")
    bad = ds / "synth" / "train" / "good" / "999.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="999.png"):
        data.load_images(data.list_train(ds, "synth"), 32, 1)
    bad.unlink()
    gt = next((ds / "synth" / "ground_truth" / "blob").iterdir())
    cv2.imwrite(str(gt), np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="size"):
        data.load_masks(data.list_test(ds, "synth"), 32)
    gt.unlink()
    with pytest.raises(DatasetError, match="mask"):
        data.list_test(ds, "synth")


def test_roi_default_and_override(tmp_path):
    make_dataset(tmp_path, n_train=3, n_test_good=1, n_test_defect=1, size=32, write_roi=True)
    ov = tmp_path / "synth" / "roi" / "train" / "good"
    ov.mkdir(parents=True)
    cv2.imwrite(str(ov / "001.png"), np.zeros((32, 32), np.uint8))
    tr = data.list_train(tmp_path, "synth")
    rois = data.load_rois(tr, 32, data.default_roi_path(tmp_path, "synth"))
    assert rois[0].any() and not rois[0].all()  # the default disc
    assert not rois[1].any()  # the override (empty)


def test_thin_defect_survives_mask_resizing(tmp_path):
    """A 1-px crack at 256 px vanishes under nearest-neighbour resizing to 64; its image must
    still be labelled defective (from the folder) and keep a ground-truth pixel (area resize)."""
    import cv2

    from model.data import list_test, load_masks, mask_to_size
    from model.evaluate import image_labels

    m = np.zeros((256, 256), bool)
    m[101, 30:200] = True  # 256 → 64 nearest samples rows 0, 4, 8, …: row 101 is skipped
    assert not (cv2.resize(m.astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST) > 0).any()
    small = mask_to_size(m, 64)
    assert small.any() and small.sum() >= 40
    cat = tmp_path / "ds" / "c"
    for split, t in (("train", "good"), ("test", "good"), ("test", "crack")):
        (cat / split / t).mkdir(parents=True)
        cv2.imwrite(str(cat / split / t / "000.png"), np.full((256, 256), 128, np.uint8))
    (cat / "ground_truth" / "crack").mkdir(parents=True)
    cv2.imwrite(str(cat / "ground_truth" / "crack" / "000_mask.png"), m.astype(np.uint8) * 255)
    samples = list_test(tmp_path / "ds", "c")
    gt = load_masks(samples, 64)
    types = np.array([s.defect_type for s in samples])
    labels = image_labels(types, gt, None)
    assert labels.tolist() == [t != "good" for t in types] and labels.sum() == 1
    assert gt[types == "crack"].any()
    # with an ROI, a defect wholly outside it is not a reject; one touching it is
    roi = np.zeros((len(samples), 64, 64), bool)
    assert not image_labels(types, gt, roi).any()
    roi[:, 25] = True  # row 101 / 4
    assert image_labels(types, gt, roi).tolist() == labels.tolist()


def test_textures_span_every_class_with_random_crops(tmp_path):
    import cv2

    from model.data import load_textures

    for c in range(6):
        d = tmp_path / "tex" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(10):
            cv2.imwrite(str(d / f"{i}.png"), np.full((40, 60, 3), 20 * c + i, np.uint8))
    tex = load_textures(tmp_path / "tex", 16, 3, limit=12)
    assert tex.shape == (12, 32, 32, 3)
    classes = sorted({int(t[0, 0, 0]) // 20 for t in tex})
    assert classes == list(range(6))  # two of each class, not the first two classes' files
