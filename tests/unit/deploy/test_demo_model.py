"""The vials model the repository ships for `make demo`: it loads safely (safetensors + JSON, no
pickle), is small, is not git-ignored, and its PROVENANCE.json says how it was made and scored."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.predictor import Predictor

REPO = Path(__file__).resolve().parents[3]
MODEL = REPO / "deploy" / "local" / "demo-model"


@pytest.fixture(scope="module")
def provenance() -> dict:
    return json.loads((MODEL / "PROVENANCE.json").read_text())


def test_demo_serves_this_directory():
    spec = importlib.util.spec_from_file_location("demo", REPO / "deploy" / "local" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)  # top level imports only the standard library
    assert demo.SHIPPED == MODEL
    assert (MODEL / demo.PROVENANCE).is_file()


def test_loads_with_predictor_and_scores_a_frame(provenance):
    predictor = Predictor.load(MODEL, device="cpu", backend="torch")
    assert predictor.version == provenance["version"]
    assert np.isfinite(predictor.threshold) and np.isfinite(predictor.pixel_threshold)
    frame = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    batch = predictor.predict([frame])
    assert np.isfinite(np.asarray(batch.scores)).all()


def test_only_safe_small_files():
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in files}
    assert suffixes <= {".safetensors", ".json", ".md", ".png", ".csv"}, suffixes
    assert not (MODEL / "checkpoint").exists()  # the trainer's resume state holds a pickle
    assert sum(p.stat().st_size for p in files) < 10 * 2**20


def test_provenance_records_command_commit_and_evaluation(provenance):
    meta = json.loads((MODEL / "model.json").read_text())
    assert provenance["version"] == meta["version"]
    assert re.fullmatch(r"[0-9a-f]{40}", provenance["commit"])
    train = provenance["commands"]["train"]
    assert train.startswith("grdline train ") and "--steps" in train and "--seed" in train
    assert provenance["commands"]["simulate"].startswith("grdline simulate dataset ")
    assert provenance["commands"]["eval"].startswith("grdline eval ")
    assert provenance["training_time_s"] > 0 and provenance["date"]
    ev = provenance["evaluation"]
    for key in ("image_auroc", "pixel_auroc", "aupro", "false_reject_rate", "escape_rate"):
        assert 0.0 <= ev[key] <= 1.0, key
    shipped = json.loads((MODEL / "evaluation" / "metrics.json").read_text())
    assert shipped["image_auroc"] == ev["image_auroc"]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs the git checkout")
def test_not_git_ignored():
    for name in ("weights.safetensors", "model.json", "PROVENANCE.json"):
        path = MODEL / name
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO)
        assert ignored.returncode == 1, f"{path} is git-ignored"
