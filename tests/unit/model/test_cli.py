import json

from inference.cli import main
from model.predictor import Predictor
from model.testing import make_dataset


def test_train_and_eval_commands(tmp_path, capsys):
    make_dataset(tmp_path / "ds", n_train=10, n_test_good=3, n_test_defect=2, size=64)
    rc = main(["train", "--data", str(tmp_path / "ds"), "--category", "synth", "--profile",
               "line", "--out", str(tmp_path / "m"), "--steps", "2", "--image-size", "64",
               "--seed", "1", "--device", "cpu", "--no-progress",
               "--set", "anomaly.geo_rotation_deg=5", "--set", "anomaly.vflip=false",
               "--set", "scoring.pool_kernel=5"])
    assert rc == 0
    config = json.loads((tmp_path / "m" / "model.json").read_text())["config"]
    assert config["anomaly"]["geo_rotation_deg"] == 5 and config["anomaly"]["vflip"] is False
    assert config["scoring"]["pool_kernel"] == 5
    for f in ("weights.safetensors", "model.json", "loss_curves.png", "train_log.json"):
        assert (tmp_path / "m" / f).is_file(), f
    p = Predictor.load(tmp_path / "m")
    assert p.channels == 1 and p.image_size == 64
    rc = main(["eval", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "ds"),
               "--category", "synth", "--out", str(tmp_path / "e")])
    assert rc == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for k in ("image_auroc", "pixel_auroc", "image_ap", "pixel_ap", "aupro", "f1_max",
              "false_reject_rate", "escape_rate", "per_defect_type"):
        assert k in m
    assert set(m["per_defect_type"]) == {"blob", "scratch"}
    assert (tmp_path / "e" / "summary.md").is_file() and (tmp_path / "e" / "roc.png").is_file()
    assert any((tmp_path / "e" / "overlays").glob("*.png"))
    # a missing category is a clear error with a non-zero exit code
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "ds"),
                 "--category", "nope", "--out", str(tmp_path / "e2")]) == 2


def test_train_set_rejects_unknown_field_by_name(tmp_path, caplog):
    make_dataset(tmp_path / "ds", n_train=4, n_test_good=1, n_test_defect=1, size=32)
    rc = main(["train", "--data", str(tmp_path / "ds"), "--category", "synth", "--out",
               str(tmp_path / "m"), "--steps", "1", "--set", "anomaly.geo_rotaton_deg=5"])
    assert rc == 2
    assert "anomaly.geo_rotaton_deg" in caplog.text
    assert not (tmp_path / "m" / "model.json").exists()


def test_presets_apply_under_set_overrides():
    import pytest

    from model.config import PRESETS, make_config
    from model.errors import ConfigError

    plain = make_config("line")
    vials = make_config("line", preset="vials")
    assert vials.anomaly.roi_probability == PRESETS["vials"]["anomaly"]["roi_probability"] > 0
    # defaults keep good parts as they are: no rotation or flips unless a preset allows them
    assert plain.anomaly.geo_rotation_deg == 0 and not plain.anomaly.hflip
    assert not plain.anomaly.vflip
    assert vials.anomaly.geo_rotation_deg == 5 and vials.anomaly.hflip and not vials.anomaly.vflip
    assert vials.pool_kernel == plain.pool_kernel == 5  # scaled with the 128-px image
    assert make_config("line", preset="vials", scoring={"pool_kernel": 9}).pool_kernel == 9
    with pytest.raises(ConfigError, match="unknown preset 'vial'"):
        make_config("line", preset="vial")


def test_pool_kernel_scales_with_image_size_and_smallest_defect():
    import pytest

    from model.config import make_config
    from model.errors import ConfigError

    assert [make_config("line", image_size=s).pool_kernel for s in (64, 128, 256)] == [3, 5, 9]
    assert make_config("paper").pool_kernel == 9
    # a product whose smallest defect of interest is 4 px gets at most a 3-px pool
    assert make_config("line", scoring={"min_defect_px": 4}).pool_kernel == 3
    assert make_config("line", scoring={"pool_kernel": 21}).pool_kernel == 21
    with pytest.raises(ConfigError, match="pool_kernel must be odd"):
        make_config("line", scoring={"pool_kernel": 4})


def test_train_warns_how_many_good_images_the_target_needs(tmp_path, caplog):
    import logging

    make_dataset(tmp_path / "ds", n_train=10, n_test_good=2, n_test_defect=1, size=32)
    with caplog.at_level(logging.WARNING):
        rc = main(["train", "--data", str(tmp_path / "ds"), "--category", "synth", "--out",
                   str(tmp_path / "m"), "--steps", "1", "--image-size", "32", "--device", "cpu",
                   "--no-progress"])
    assert rc == 0
    assert "needs at least 598" in caplog.text  # 0.5 % at 95 % confidence
    cal = json.loads((tmp_path / "m" / "model.json").read_text())["calibration"]
    lo, hi = cal["val_false_reject_ci95"]
    assert 0.0 <= lo <= cal["val_false_reject"] <= hi <= 1.0 and hi > 0.2  # 6 images say little
    assert cal["target_backed_by_data"] is False and cal["images_needed_for_target"] == 598
    assert cal["precision"] in cal["thresholds_by_precision"]
