import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from model.calibration import calibrate, image_threshold
from model.metrics import all_metrics, aupro, f1_max, rates_at


def test_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 0, 1, 0], bool)
    scores = rng.random(8)
    masks = rng.random((8, 16, 16)) > 0.9
    maps = rng.random((8, 16, 16)) + masks * 0.3
    m = all_metrics(labels, scores, masks, maps, tau=0.5)
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["image_ap"] == pytest.approx(average_precision_score(labels, scores))
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert m["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    frr, esc = rates_at(labels, scores, 0.5)
    assert m["false_reject_rate"] == frr == pytest.approx(np.mean(scores[~labels] >= 0.5))
    assert m["escape_rate"] == esc == pytest.approx(np.mean(scores[labels] < 0.5))


def test_f1_max_hand_case():
    # threshold 0.6 → TP 2, FP 0, FN 1 → F1 = 0.8; threshold 0.3 → TP 3, FP 1 → 6/7 ≈ 0.857
    labels = np.array([1, 1, 1, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.3, 0.4, 0.1])
    assert f1_max(labels, scores) == pytest.approx(6 / 7)


def test_aupro_hand_case():
    # one image: a 2-pixel region (scores 0.9, 0.5) and two normal pixels (0.7, 0.1).
    # PRO/FPR steps: (0, .5) at t=.9, (.5, .5) at .7, (.5, 1) at .5, (1, 1) at .1
    m = np.array([[[True, True, False, False]]])
    s = np.array([[[0.9, 0.5, 0.7, 0.1]]])
    assert aupro(m, s, 0.3) == pytest.approx(0.5)  # PRO = 0.5 on [0, 0.3]
    assert aupro(m, s, 1.0) == pytest.approx(0.75)  # 0.5·0.5 + 1·0.5
    # two regions of different size weigh equally: small region found first
    m2 = np.zeros((1, 1, 6), bool)
    m2[0, 0, 0] = True  # region A (1 px), separated by a normal pixel from B
    m2[0, 0, 2:4] = True  # region B (2 px)
    s2 = np.array([[[0.9, 0.0, 0.8, 0.1, 0.2, 0.3]]])
    # t=.9: PRO .5 (A), t=.8: .75 (+half of B), normal pixels .3/.2/.1 then B's 2nd pixel
    # FPR steps of 1/3: (1/3, .75), (2/3, .75), (2/3, 1) ...; up to 0.3 PRO is .75
    assert aupro(m2, s2, 0.3) == pytest.approx(0.75)
    assert np.isnan(aupro(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2))))


def test_calibration_uses_quantile_of_good_scores():
    good = np.linspace(0, 1, 201).astype(np.float32)
    t = image_threshold(good, 0.05)
    assert np.mean(good >= t) <= 0.05
    assert np.mean(good >= t) >= 0.04
    th, info = calibrate(np.array([0.1, 0.2, 0.3]), np.zeros((3, 4, 4)), 0.005, 0.001, 0.1)
    assert th.image > 0.3 and info["val_false_reject"] == 0.0
    assert th.pixel == 0.1  # floor


def test_small_sample_threshold_bound_is_wider_than_the_max():
    good = np.array([0.010, 0.012, 0.008, 0.011])
    t_emp = image_threshold(good, 0.005, "empirical")
    t_max = image_threshold(good, 0.005, "max")
    assert t_emp == pytest.approx(0.012, rel=1e-5)
    assert t_max > t_emp  # the prediction bound for 4 samples lies above their max
    many = np.random.default_rng(0).normal(0.3, 0.02, 20000)
    # with many (normal) samples the bound and the empirical quantile agree closely
    assert image_threshold(many, 0.01, "t_bound") == pytest.approx(
        np.quantile(many, 0.99), rel=0.01)


def test_pixel_metrics_count_only_valid_pixels():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    maps = np.zeros((2, 8, 8), np.float32)
    maps[0, 2:4, 2:4] = 0.9  # the defect is found ...
    maps[:, 6:, 6:] = 1.0  # ... but a corner outside the ROI lights up
    roi = np.zeros((2, 8, 8), bool)
    roi[:, :5, :5] = True
    labels = masks.reshape(2, -1).any(1)
    scores = np.array([0.9, 0.1])
    everywhere = all_metrics(labels, scores, masks, maps, tau=0.5)
    in_roi = all_metrics(labels, scores, masks, maps, tau=0.5, valid=roi)
    assert everywhere["pixel_auroc"] < 1.0 and everywhere["aupro"] < 1.0
    assert in_roi["pixel_auroc"] == 1.0 and in_roi["aupro"] == pytest.approx(1.0)


def test_pixel_threshold_counts_only_roi_pixels():
    from model.calibration import pixel_threshold

    maps = np.zeros((4, 10, 10), np.float32)
    roi = np.zeros((4, 10, 10), bool)
    roi[:, :5] = True  # half the image
    rng = np.random.default_rng(0)
    maps[roi] = rng.uniform(0.2, 0.9, roi.sum())
    p = 0.1
    t_roi = pixel_threshold(maps, p, 0.0, valid=roi)
    t_all = pixel_threshold(maps, p, 0.0)
    # over the ROI the false-positive rate is the target; counting the zeros outside halves it
    assert abs(float((maps[roi] >= t_roi).mean()) - p) <= 0.01
    assert float((maps[roi] >= t_all).mean()) > 2 * p - 0.02 > p


def test_calibration_reports_an_honest_interval_and_images_needed():
    from model.calibration import calibrate, clopper_pearson, images_needed

    assert images_needed(0.005) == 598 and images_needed(0.05) == 59
    lo, hi = clopper_pearson(0, 15)
    assert lo == 0.0 and abs(hi - 0.2180) < 1e-3  # the exact 95 % bound for 0 of 15
    lo, hi = clopper_pearson(5, 100)
    assert abs(lo - 0.0164) < 1e-3 and abs(hi - 0.1128) < 1e-3
    rng = np.random.default_rng(1)
    th, info = calibrate(rng.normal(0.2, 0.02, 15), np.zeros((15, 4, 4)), 0.005, 0.001, 0.1)
    assert info["n_images"] == 15 and info["images_needed_for_target"] == 598
    assert info["target_backed_by_data"] is False
    assert info["val_false_reject_ci95"][1] > 0.2
