"""The serving config's ``model.backend`` / ``model.precision``: validated against the device,
and honoured by ``load_predictor`` (a tiny untrained artefact, CPU)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from inference.config import ServeAppConfig
from inference.model_deployment import load_predictor
from model.artefact import save_untrained


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_untrained(tmp_path_factory.mktemp("m") / "m", profile="line", image_size=64,
                          channels=1, seed=0)


def cfg(model_dir, **model) -> ServeAppConfig:
    return ServeAppConfig(model_dir=model_dir, model=model)


@pytest.mark.parametrize(("model", "field"), [
    ({"device": "cuda", "backend": "onnxruntime"}, "model.backend"),
    ({"device": "cpu", "precision": "fp16"}, "model.precision"),
    ({"device": "cpu", "backend": "onnxruntime", "precision": "bf16"}, "model.precision"),
    ({"device": "auto", "backend": "onnxruntime", "precision": "fp16"}, "model.precision"),
])
def test_wrong_combinations_fail_when_the_config_loads(tmp_path, model, field):
    with pytest.raises(ValidationError, match=field):
        cfg(tmp_path, **model)


def test_valid_combinations_and_defaults(tmp_path):
    assert cfg(tmp_path).model.backend is None and cfg(tmp_path).model.precision is None
    cfg(tmp_path, device="cpu", backend="onnxruntime", precision="fp32")
    cfg(tmp_path, device="cuda", backend="torch", precision="fp16")
    cfg(tmp_path, device="auto", backend="onnxruntime")  # checked again once auto is resolved


@pytest.mark.parametrize(("model", "device", "field"), [
    ({"backend": "onnxruntime"}, "cuda", "model.backend"),
    ({"precision": "fp16"}, "cpu", "model.precision"),
])
def test_auto_device_is_checked_before_the_model_loads(tmp_path, model, device, field):
    # tmp_path holds no artefact: the check must come first
    with pytest.raises(ValueError, match=field):
        load_predictor(cfg(tmp_path, device="auto", **model), device)


def test_load_predictor_uses_the_artefact_settings_by_default(model_dir):
    p = load_predictor(cfg(model_dir, device="cpu"), "cpu")
    assert p.backend == "torch"  # the untrained artefact has no bf16 calibration → fp32
    assert p.precision == "fp32"


@pytest.mark.parametrize("model", [
    {"backend": "onnxruntime"},
    {"backend": "torch", "precision": "bf16"},
    {"precision": "auto"},
])
def test_load_predictor_passes_backend_and_precision(tmp_path, monkeypatch, model):
    from model.predictor import Predictor

    calls = []
    loaded = SimpleNamespace(backend="b", precision="p")
    monkeypatch.setattr(Predictor, "load", lambda *a, **kw: calls.append((a, kw)) or loaded)
    assert load_predictor(cfg(tmp_path, device="cpu", **model), "cpu") is loaded
    (args, kw), = calls
    assert args == (tmp_path,) and kw == {"device": "cpu", "backend": model.get("backend"),
                                          "precision": model.get("precision")}


def test_load_predictor_serves_the_chosen_precision(model_dir):
    import numpy as np

    p = load_predictor(cfg(model_dir, device="cpu", backend="torch", precision="bf16"), "cpu")
    assert (p.backend, p.precision) == ("torch", "bf16")
    out = p.predict([np.zeros((64, 64), np.uint8)])
    assert out.scores.shape == (1,) and np.isfinite(out.scores).all()
