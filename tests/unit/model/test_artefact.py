import json
import pickle

import numpy as np
import pytest
import torch

from model.artefact import WEIGHTS, load, read_meta, save_untrained
from model.errors import ArtefactError
from model.predictor import Predictor


def test_round_trip(tmp_path):
    d = save_untrained(tmp_path / "m", profile="line", image_size=64, channels=1, seed=3,
                       threshold=0.25, pixel_threshold=0.75)
    net, meta = load(d)
    assert meta.thresholds.image == 0.25 and meta.thresholds.pixel == 0.75
    assert meta.config.image_size == 64 and meta.config.channels == 1
    # same seed → identical weights; reload gives the same tensors
    d2 = save_untrained(tmp_path / "m2", image_size=64, channels=1, seed=3)
    net2, _ = load(d2)
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.infer(x).heat, net2.infer(x).heat)


def test_pickle_file_is_refused(tmp_path):
    d = save_untrained(tmp_path / "m")
    net, _ = load(d)
    torch.save(net.state_dict(), d / WEIGHTS)  # a torch zip/pickle archive in place of weights
    with pytest.raises(ArtefactError, match="pickle"):
        load(d, verify_hash=False)
    (d / WEIGHTS).write_bytes(pickle.dumps({"a": np.zeros(3)}))
    with pytest.raises(ArtefactError, match="pickle"):
        load(d, verify_hash=False)


def test_corrupt_and_mismatched_files(tmp_path):
    d = save_untrained(tmp_path / "m")
    (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:100])
    with pytest.raises(ArtefactError):
        load(d, verify_hash=False)
    with pytest.raises(ArtefactError, match="sha256"):
        load(d)
    d = save_untrained(tmp_path / "m2", channels=1)
    meta = json.loads((d / "model.json").read_text())
    meta["config"]["channels"] = 3  # weights no longer match the config
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtefactError, match="shape"):
        load(d)
    meta["format_version"] = 99
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtefactError, match="format_version"):
        read_meta(d)
    with pytest.raises(ArtefactError, match="does not exist"):
        load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtefactError, match="missing"):
        Predictor.load(tmp_path / "empty")
