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
    assert plain.anomaly.roi_probability == 0 and plain.anomaly.vflip  # the spec's defaults stay
    assert not vials.anomaly.vflip and vials.scoring.pool_kernel == 5
    assert make_config("line", preset="vials", scoring={"pool_kernel": 9}).scoring.pool_kernel == 9
    with pytest.raises(ConfigError, match="unknown preset 'vial'"):
        make_config("line", preset="vial")
