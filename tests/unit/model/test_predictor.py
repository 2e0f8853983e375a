import numpy as np
import pytest

from model.artefact import save_untrained
from model.errors import ModelError
from model.predictor import PredictionBatch, Predictor


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    d = save_untrained(tmp_path_factory.mktemp("m") / "m", image_size=64, channels=1, seed=0,
                       threshold=0.5, pixel_threshold=0.4)
    return Predictor.load(d, device="cpu")


def test_attributes(predictor):
    assert predictor.image_size == 64 and predictor.channels == 1
    assert predictor.threshold == 0.5 and predictor.pixel_threshold == 0.4
    assert predictor.version.startswith("untrained-line")
    predictor.set_thresholds(image=0.1)
    assert predictor.threshold == 0.1 and predictor.pixel_threshold == 0.4
    predictor.set_thresholds(image=0.5, pixel=0.4)


def test_predict_mixed_sizes_and_rois(predictor):
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (100, 80), dtype=np.uint8),
           rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
           rng.integers(0, 256, (30, 50, 1), dtype=np.uint8)]
    roi = np.zeros((100, 80), np.uint8)
    roi[10:60, 20:70] = 255
    out = predictor.predict(ims, [roi, None, np.ones((30, 50), bool)])
    assert isinstance(out, PredictionBatch)
    assert out.scores.dtype == np.float32 and out.scores.shape == (3,)
    assert out.decisions.dtype == np.bool_
    np.testing.assert_array_equal(out.decisions, out.scores >= predictor.threshold)
    assert [m.shape for m in out.masks] == [(100, 80), (64, 64), (30, 50)]
    assert all(m.dtype == np.bool_ for m in out.masks)
    assert all(h.dtype == np.float32 and h.min() >= 0 and h.max() <= 1 for h in out.heatmaps)
    assert out.heatmaps[0][roi == 0].max() == 0 and not out.masks[0][roi == 0].any()
    np.testing.assert_array_equal(out.masks[1], out.heatmaps[1] >= predictor.pixel_threshold)


def test_roi_lowers_or_keeps_score(predictor):
    rng = np.random.default_rng(1)
    im = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    empty = np.zeros((64, 64), bool)
    full = predictor.predict([im]).scores[0]
    none = predictor.predict([im], [empty]).scores[0]
    assert none == 0.0 and full > 0.0


def test_bad_input_is_rejected(predictor):
    with pytest.raises(ModelError):
        predictor.predict([np.zeros((8, 8), np.float32)])
    with pytest.raises(ModelError):
        predictor.predict([np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(ModelError):
        predictor.predict([np.zeros((8, 8), np.uint8)], [np.ones((9, 9), bool)])
    assert predictor.predict([]).scores.shape == (0,)


def test_scores_do_not_depend_on_batch_size(predictor):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(16)]
    full = predictor.predict(imgs).scores
    one = np.concatenate([predictor.predict([im]).scores for im in imgs])
    assert np.abs(full - one).max() <= 1e-5
