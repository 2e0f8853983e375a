"""ONNX export (``grdline export``) and the onnxruntime backend of the Predictor: parity with
the eager fp32 Predictor, the sidecar, stale exports, and start-up errors."""

import json
import shutil
import sys

import numpy as np
import pytest

from inference.cli import main
from model.artefact import load, save_untrained
from model.errors import ModelError
from model.export import ONNX_FILE, OnnxMeta, find_export, sidecar_path
from model.predictor import Predictor

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = save_untrained(tmp_path_factory.mktemp("m") / "m", profile="line", image_size=64,
                       channels=1, seed=0, threshold=0.5, pixel_threshold=0.5)
    assert main(["export", "--model", str(d), "--format", "onnx"]) == 0
    return d


@pytest.fixture(scope="module")
def pair(exported):
    eager = Predictor.load(exported, device="cpu", precision="fp32")
    ort = Predictor.load(exported, device="cpu", backend="onnxruntime")
    return eager, ort


def _images(n, seed):
    rng = np.random.default_rng(seed)
    ims = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(n)]
    rois = [None] * n
    if n > 1:  # another size and an ROI exercise resizing and ROI filtering
        ims[1] = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
        rois[1] = np.zeros((90, 70), bool)
        rois[1][10:80, 5:60] = True
    return ims, rois


def test_export_writes_graph_and_sidecar(exported):
    info = OnnxMeta.model_validate_json(sidecar_path(exported / ONNX_FILE).read_text())
    meta = json.loads((exported / "model.json").read_text())
    assert info.weights_sha256 == meta["sha256"] and info.model_version == meta["version"]
    assert info.inputs[0].shape == ["batch", 1, 64, 64]
    assert [o.name for o in info.outputs] == ["x_hat", "logits"]
    assert info.outputs[1].shape == ["batch", 1, 64, 64]
    assert info.precision == "fp32" and info.max_abs_logit_diff is not None
    assert info.max_abs_logit_diff <= TOL
    assert info.thresholds_fp32.image == 0.5


@pytest.mark.parametrize("n", [1, 12])
def test_scores_and_masks_match_eager_fp32(pair, n):
    eager, ort = pair
    assert ort.backend == "onnxruntime" and ort.precision == "fp32" and ort.net is None
    ims, rois = _images(n, seed=n)
    a = eager.predict(ims, rois)
    # a pixel threshold inside the maps' range, so the masks are not trivially empty
    tau_px = float(np.median(np.concatenate([h.ravel() for h in a.heatmaps])))
    for p in (eager, ort):
        p.set_thresholds(image=float(np.median(a.scores)), pixel=tau_px)
    a, b = eager.predict(ims, rois), ort.predict(ims, rois)
    assert b.scores.dtype == np.float32 and b.scores.shape == (n,)
    assert np.abs(a.scores - b.scores).max() <= TOL
    tie = np.abs(a.scores - eager.threshold) <= TOL
    np.testing.assert_array_equal(a.decisions[~tie], b.decisions[~tie])
    for ma, mb, ha, hb in zip(a.masks, b.masks, a.heatmaps, b.heatmaps, strict=True):
        assert ma.shape == mb.shape and mb.dtype == np.bool_ and hb.dtype == np.float32
        assert np.abs(ha - hb).max() <= TOL
        ties = np.abs(ha - tau_px) <= TOL
        np.testing.assert_array_equal(ma[~ties], mb[~ties])
        assert ma.any() and not ma.all()


def test_fp32_thresholds_are_used(exported):
    net, meta = load(exported)
    cal = {"precision": "bf16", "bf16_ok": True, "thresholds_by_precision": {
        "fp32": {"image": 0.3, "pixel": 0.2}, "bf16": {"image": 0.7, "pixel": 0.6}}}
    meta = meta.model_copy(update={"calibration": cal})
    p = Predictor(net, meta, device="cpu", backend="onnxruntime",
                  onnx_model=exported / ONNX_FILE)
    assert (p.threshold, p.pixel_threshold) == (0.3, 0.2)


def test_config_field_chooses_the_backend(exported, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(exported, d)
    meta = json.loads((d / "model.json").read_text())
    assert meta["config"]["inference"]["backend"] == "torch"
    meta["config"]["inference"]["backend"] = "onnxruntime"
    (d / "model.json").write_text(json.dumps(meta))
    assert Predictor.load(d, device="cpu").backend == "onnxruntime"
    assert Predictor.load(d, device="cpu", backend="torch").backend == "torch"


def test_stale_or_changed_export_is_ignored(exported, tmp_path):
    _, meta = load(exported)
    assert find_export(exported, meta) == exported / ONNX_FILE
    d = tmp_path / "m"
    shutil.copytree(exported, d)
    side = sidecar_path(d / ONNX_FILE)
    info = json.loads(side.read_text())
    info["weights_sha256"] = "0" * 64
    side.write_text(json.dumps(info))
    assert find_export(d, meta) is None
    shutil.copy(sidecar_path(exported / ONNX_FILE), side)
    with (d / ONNX_FILE).open("ab") as f:
        f.write(b"\0")
    assert find_export(d, meta) is None


def test_stale_export_is_replaced_in_memory_and_out_path(exported, tmp_path, monkeypatch):
    """Without a matching model.onnx the Predictor exports in memory; --out FILE writes FILE and
    FILE.json and leaves the artefact alone (the exporter is stubbed: the real one ran above)."""
    import model.export as ex

    good = (exported / ONNX_FILE).read_bytes()
    calls = []
    monkeypatch.setattr(ex, "onnx_bytes", lambda net, fuse_norm=True: calls.append(1) or good)
    d = tmp_path / "m"
    shutil.copytree(exported, d)
    (d / ONNX_FILE).write_bytes(b"not onnx")
    p = Predictor.load(d, device="cpu", backend="onnxruntime")
    assert calls == [1] and p.backend == "onnxruntime"
    before = (d / "model.json").read_text()
    out = tmp_path / "x" / "g.onnx"
    assert main(["export", "--model", str(d), "--out", str(out), "--no-check"]) == 0
    assert out.read_bytes() == good
    assert OnnxMeta.model_validate_json((tmp_path / "x" / "g.onnx.json").read_text())
    assert (d / "model.json").read_text() == before


def test_startup_errors_name_the_field(exported, monkeypatch):
    net, meta = load(exported)
    path = exported / ONNX_FILE
    for kwargs in ({"precision": "bf16"}, {"device": "cuda"}):
        with pytest.raises(ModelError, match="inference.backend"):
            Predictor(net, meta, backend="onnxruntime", onnx_model=path,
                      **{"device": "cpu", **kwargs})
    with pytest.raises(ModelError, match="inference.backend"):
        Predictor(net, meta, device="cpu", backend="tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ModelError, match="inference.backend .*onnxruntime is not installed"):
        Predictor(net, meta, device="cpu", backend="onnxruntime", onnx_model=path)
