"""Frames keep their shape: letterbox placement, padding that never scores, maps back at frame size."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from model import geometry as geo
from model.artefact import read_meta, save_untrained
from model.data import list_test, load_images, load_masks, load_rois
from model.predictor import Predictor, roi_to_model, to_model_input
from model.testing import make_dataset


def test_a_portrait_frame_keeps_its_aspect_ratio_and_is_centred():
    f = geo.fit((320, 240), 128, "letterbox")
    assert (f.inner_h, f.inner_w, f.top, f.left) == (128, 96, 0, 16) and f.scale == pytest.approx(0.4)
    v = geo.valid(f)
    assert v.sum() == 128 * 96 and not v[:, :16].any() and not v[:, 112:].any()
    s = geo.fit((320, 240), 128, "squash")
    assert (s.inner_h, s.inner_w) == (128, 128) and geo.valid(s).all()
    assert geo.fit((64, 64), 64, "letterbox").identity


def test_a_circle_stays_a_circle_and_maps_back_to_the_frame():
    frame = np.zeros((320, 240), np.uint8)
    cv2.circle(frame, (120, 160), 60, 255, -1)
    f = geo.fit(frame.shape, 128, "letterbox")
    m = geo.image_to_model(frame, f)
    ys, xs = np.nonzero(m > 127)
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1  # round, not an ellipse
    squashed = geo.image_to_model(frame, geo.fit(frame.shape, 128, "squash"))
    ys, xs = np.nonzero(squashed > 127)
    assert (xs.max() - xs.min()) - (ys.max() - ys.min()) >= 8  # squashing makes it an ellipse
    back = geo.map_to_frame(m.astype(np.float32) / 255, f)
    assert back.shape == frame.shape and np.abs(back - frame / 255).mean() < 0.02


def test_a_one_pixel_crack_survives_in_the_ground_truth_and_padding_is_never_truth():
    truth = np.zeros((320, 240), bool)
    truth[40:280, 119] = True  # 1 px wide, along the long side
    f = geo.fit(truth.shape, 128, "letterbox")
    t = geo.truth_to_model(truth, f)
    assert t.any() and not (t & ~geo.valid(f)).any()


def test_padding_never_scores_in_the_predictor_and_maps_come_back_at_frame_size(tmp_path):
    model = save_untrained(tmp_path / "m", image_size=64, channels=1, geometry="letterbox")
    p = Predictor.load(model, device="cpu", precision="fp32")
    assert p.geometry == "letterbox"
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (96, 48), np.uint8)
    out = p.predict([frame])
    assert out.heatmaps[0].shape == (96, 48) and out.masks[0].shape == (96, 48)
    explicit = p.predict([frame], [np.ones((96, 48), bool)])  # an ROI of the whole frame: same score
    assert out.scores[0] == pytest.approx(explicit.scores[0])
    r = roi_to_model(None, (96, 48), 64, "letterbox")
    assert r.sum() == 64 * 32 and r[:, :16].sum() == 0
    assert to_model_input(frame, 64, 1, "letterbox").shape == (64, 64, 1)


def test_artefacts_written_before_the_geometry_setting_read_as_squash(tmp_path):
    model = save_untrained(tmp_path / "m", image_size=64, channels=1)
    meta = json.loads((model / "model.json").read_text())
    assert meta["config"]["geometry"] == "squash"  # the default until letterbox is measured
    del meta["config"]["geometry"]
    (model / "model.json").write_text(json.dumps(meta))
    assert read_meta(model).config.geometry == "squash"


def test_a_non_square_dataset_gets_valid_region_rois_and_letterboxed_truth(tmp_path):
    make_dataset(tmp_path / "ds", n_train=2, n_test_good=2, n_test_defect=2, size=64)
    for png in (tmp_path / "ds").rglob("*.png"):  # make every image (and mask) 64 wide x 32 high
        im = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(png), cv2.resize(im, (64, 32), interpolation=cv2.INTER_NEAREST))
    samples = list_test(tmp_path / "ds", "synth")
    imgs = load_images(samples, 64, 1, "letterbox")
    rois = load_rois(samples, 64, None, "letterbox")
    gt = load_masks(samples, 64, "letterbox")
    assert imgs.shape == (len(samples), 64, 64, 1) and rois is not None
    assert rois[0].sum() == 64 * 32 and not rois[0][:16].any() and not rois[0][48:].any()
    assert not (gt & ~rois).any()
    assert load_rois(samples, 64, None, "squash") is None  # squash fills the square: no ROI needed


def test_the_input_size_is_picked_from_the_products_images(tmp_path):
    from model.data import list_train, pick_image_size

    for side, want in ((96, 128), (170, 128), (200, 256), (320, 256), (1024, 256)):
        root = tmp_path / f"ds{side}"
        (root / "p" / "train" / "good").mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / "p" / "train" / "good" / f"{i}.png"), np.zeros((side, side * 3 // 4), np.uint8))
        assert pick_image_size(list_train(root, "p")) == want, side
