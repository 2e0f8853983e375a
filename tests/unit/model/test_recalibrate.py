"""``grdline calibrate``: τ re-fitted on good images collected later, checked by scoring them again."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.cli import main
from model.artefact import read_meta, save_untrained
from model.data import IMAGE_EXTS, read_image
from model.predictor import Predictor
from model.testing import make_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("recal")
    make_dataset(root / "ds", n_train=24, n_test_good=2, n_test_defect=6, size=64)
    model = save_untrained(root / "m", image_size=64, channels=1, threshold=0.5)
    return root, model, root / "ds" / "synth" / "train" / "good", root / "ds" / "synth" / "test" / "blob"


def _images(folder: Path) -> list[np.ndarray]:
    return [read_image(p, 1) for p in sorted(folder.rglob("*")) if p.suffix in IMAGE_EXTS]


def _run(capsys, *args: str) -> tuple[int, dict | None]:
    rc = main(["calibrate", *args, "--device", "cpu"])
    out = capsys.readouterr().out.strip()
    return rc, (json.loads(out.splitlines()[-1]) if rc == 0 and out else None)


def test_calibrate_refits_tau_on_good_images_and_records_the_operating_point(world, capsys):
    root, model, good, bad = world
    before = (model / "model.json").read_text()
    out = root / "recal-a"
    rc, r = _run(capsys, "--model", str(model), "--good", str(good), "--target-frr", "0.1",
                 "--defective", str(bad), "--out", str(out))
    assert rc == 0 and r["n_good"] == 24 and r["n_defective"] == 6
    assert (model / "model.json").read_text() == before  # --out: the source artefact is untouched
    meta = read_meta(out)
    assert meta.version == r["version"] and "+recal" in meta.version and meta.thresholds.image == r["image_threshold"]
    assert meta.sha256 == read_meta(model).sha256  # same weights
    cal = meta.calibration
    assert cal["n_images"] == 24 and cal["target_false_reject"] == 0.1 and cal["recalibrated_from"] == r["previous_version"]
    assert [h["version"] for h in cal["history"]] == [r["previous_version"]]
    # independent count: the served model rejects exactly the reported share of those good images
    p = Predictor.load(out, device="cpu", precision=r["precision"])
    good_scores = p.predict(_images(good)).scores
    assert np.mean(good_scores >= p.threshold) == pytest.approx(r["false_reject"])
    assert r["false_reject"] <= 0.1
    lo, hi = r["false_reject_ci95"]
    assert lo <= r["false_reject"] <= hi and hi > 0.1  # 24 images cannot back a 10 % target tightly
    assert r["images_needed_for_target"] == 29 and r["target_backed_by_data"] is False
    bad_scores = p.predict(_images(bad)).scores
    assert np.mean(bad_scores < p.threshold) == pytest.approx(r["escape"])
    assert cal["expected_escape"] == pytest.approx(r["escape"])


def test_a_looser_target_gives_a_lower_threshold_and_in_place_keeps_the_weights(world, capsys, tmp_path):
    root, model, good, _ = world
    import shutil

    m = tmp_path / "m"
    shutil.copytree(model, m)
    weights = (m / "weights.safetensors").read_bytes()
    rc, strict = _run(capsys, "--model", str(m), "--good", str(good), "--target-frr", "0.01", "--out", str(tmp_path / "s"))
    assert rc == 0
    rc, loose = _run(capsys, "--model", str(m), "--good", str(good), "--target-frr", "0.3")
    assert rc == 0 and loose["model_dir"] == str(m)
    assert loose["image_threshold"] < strict["image_threshold"]
    assert read_meta(m).thresholds.image == loose["image_threshold"]  # rewritten in place
    assert (m / "weights.safetensors").read_bytes() == weights


def test_bad_input_is_a_clear_error_and_changes_nothing(world, capsys, tmp_path, caplog):
    root, model, good, _ = world
    before = (model / "model.json").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(capsys, "--model", str(model), "--good", str(empty))[0] == 2
    assert "holds no images" in caplog.text
    assert _run(capsys, "--model", str(model), "--good", str(good), "--target-frr", "1.5")[0] == 2
    assert "target_false_reject" in caplog.text
    roi = tmp_path / "roi.png"
    cv2.imwrite(str(roi), np.full((10, 20), 255, np.uint8))
    assert _run(capsys, "--model", str(model), "--good", str(good), "--roi", str(roi))[0] == 2
    assert "ROI" in caplog.text
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert _run(capsys, "--model", str(model), "--good", str(good), "--out", str(busy))[0] == 2
    assert (model / "model.json").read_text() == before
