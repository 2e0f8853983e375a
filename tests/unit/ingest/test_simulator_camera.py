"""Simulated cameras: rate, metadata, truth, shared items across a line's cameras."""

from __future__ import annotations

import time
from datetime import UTC

import numpy as np
import pytest

from ingest.simulator import (
    COSMETIC,
    DEFECT_TYPES,
    SimulatedCamera,
    SimulatedLine,
    SimulatorError,
    TruthStore,
    interleave,
)
from ingest.source import CapturedFrame

SIZE = 64


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_frames_metadata_and_truth():
    cam = SimulatedCamera(
        "L7", "camA", fps=None, defect_rate=0.5, seed=1, size=SIZE, recipe="vials", n_frames=12
    )
    frames = list(cam)
    assert len(frames) == 12
    for k, f in enumerate(frames):
        assert isinstance(f, CapturedFrame)
        assert (f.line_id, f.camera_id, f.recipe) == ("L7", "camA", "vials")
        assert f.frame_id == f"L7.camA.{k:09d}" and f.item_id == f"L7-item{k:09d}"
        assert f.captured_at.tzinfo is not None and f.captured_at.utcoffset().total_seconds() == 0
        assert f.image.shape == (SIZE, SIZE) and f.image.dtype == np.uint8
        t = f.truth
        assert {"defect_type", "reject", "defect_mask", "roi"} <= set(t)
        assert t["roi"].dtype == bool and t["roi"].shape == (SIZE, SIZE)
        if t["defect_type"] == "good":
            assert t["defect_mask"] is None and not t["reject"]
        else:
            assert t["defect_type"] in DEFECT_TYPES and t["reject"]
            assert t["defect_mask"].any() and (t["defect_mask"] & t["roi"]).any()
    assert len({f.frame_id for f in frames}) == 12
    assert sum(f.truth["reject"] for f in frames) >= 2


def test_deterministic_for_a_seed():
    a = list(SimulatedCamera("L1", "c", None, 0.3, seed=9, size=SIZE, n_frames=6))
    b = list(SimulatedCamera("L1", "c", None, 0.3, seed=9, size=SIZE, n_frames=6))
    c = list(SimulatedCamera("L1", "c", None, 0.3, seed=10, size=SIZE, n_frames=6))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))


def test_defect_and_cosmetic_rates():
    frames = list(
        SimulatedCamera(
            "L1", "c", None, defect_rate=0.2, cosmetic_rate=0.2, seed=0, size=SIZE, n_frames=150
        )
    )
    types = [f.truth["defect_type"] for f in frames]
    rejects = sum(f.truth["reject"] for f in frames)
    cosmetic = [f for f in frames if f.truth["defect_type"] == COSMETIC]
    assert 15 <= rejects <= 45 and 15 <= len(cosmetic) <= 45
    assert all(not f.truth["reject"] and f.truth["defect_mask"].any() for f in cosmetic)
    assert types.count("good") > 60


def test_paced_on_a_fixed_schedule_without_drift():
    clock = FakeClock()
    cam = SimulatedCamera(
        "L1",
        "c",
        fps=20.0,
        seed=0,
        size=SIZE,
        n_frames=5,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )
    frames = list(cam)
    assert len(frames) == 5
    # rendering takes no fake time, so each wait is exactly one period after the first frame
    assert clock.sleeps == pytest.approx([0.05] * 4)


def test_real_rate_is_close_to_target():
    fps, n = 50.0, 11
    t0 = time.monotonic()
    frames = list(SimulatedCamera("L1", "c", fps=fps, seed=0, size=SIZE, n_frames=n))
    elapsed = time.monotonic() - t0
    # never faster than fps (tight); slower only by what a busy 2-core machine adds (loose)
    assert (n - 1) / fps * 0.95 <= elapsed < (n - 1) / fps + 3.0
    gaps = [
        (b.captured_at - a.captured_at).total_seconds()
        for a, b in zip(frames, frames[1:], strict=False)
    ]
    assert 0.95 / fps <= np.mean(gaps) < 1 / fps + 0.25, gaps


def test_cameras_of_a_line_see_the_same_items():
    line = SimulatedLine(
        "L2", ("top", "side"), fps=None, defect_rate=0.6, seed=4, size=SIZE, n_items=6
    )
    frames = list(line)
    assert [f.camera_id for f in frames[:4]] == ["top", "side", "top", "side"]
    for top, side in zip(frames[::2], frames[1::2], strict=True):
        assert top.item_id == side.item_id and top.captured_at == side.captured_at
        assert top.frame_id != side.frame_id
        assert top.truth["defect_type"] == side.truth["defect_type"]
        assert not np.array_equal(top.image, side.image)  # own pose, light and noise
    # a camera in another process with the same line and seed sees the same sequence
    alone = list(SimulatedCamera("L2", "side", None, 0.6, seed=4, size=SIZE, n_frames=6))
    assert [f.truth["defect_type"] for f in alone] == [f.truth["defect_type"] for f in frames[1::2]]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(alone, frames[1::2], strict=True))


def test_interleave_lines_and_close():
    lines = [
        SimulatedLine(f"L{i}", ("c0",), fps=None, seed=0, size=SIZE, n_items=3) for i in range(2)
    ]
    merged = interleave(lines)
    ids = [f.frame_id for f in merged]
    assert ids == [
        "L0.c0.000000000",
        "L1.c0.000000000",
        "L0.c0.000000001",
        "L1.c0.000000001",
        "L0.c0.000000002",
        "L1.c0.000000002",
    ]
    cam = SimulatedCamera("L1", "c", fps=None, seed=0, size=SIZE)  # endless
    got = []
    for f in cam:
        got.append(f)
        if len(got) == 3:
            cam.close()
    assert len(got) == 3
    merged.close()


def test_truth_store_round_trip(tmp_path):
    store = TruthStore(capacity=4)
    frames = list(
        SimulatedCamera(
            "L1", "c", None, defect_rate=1.0, seed=2, size=SIZE, n_frames=6, run_id="run42"
        )
    )
    for f in frames:
        store.record(f)
    assert len(store) == 4 and store.get(frames[0].frame_id) is None
    last = frames[-1]
    rec = store.get(last.frame_id)
    assert rec.reject and rec.defect_area_px == int(last.truth["defect_mask"].sum())
    assert last.frame_id.startswith("run42.") and np.array_equal(
        store.mask(last.frame_id), last.truth["defect_mask"]
    )
    store.dump_jsonl(tmp_path / "truth.jsonl")
    back = TruthStore.load_jsonl(tmp_path / "truth.jsonl")
    assert back.get(last.frame_id) == rec
    (tmp_path / "bad.jsonl").write_text('{"frame_id": 1}\n')
    with pytest.raises(SimulatorError, match="bad.jsonl:1"):
        TruthStore.load_jsonl(tmp_path / "bad.jsonl")


def test_bad_arguments():
    with pytest.raises(SimulatorError):
        SimulatedCamera(fps=0)
    with pytest.raises(SimulatorError):
        SimulatedCamera(defect_rate=0.8, cosmetic_rate=0.3)
    f = next(iter(SimulatedCamera(fps=None, size=SIZE)))
    assert f.captured_at.tzinfo is UTC or f.captured_at.utcoffset().total_seconds() == 0


def test_run_id_separates_items_of_separate_runs():
    def items(run_id, camera_id):
        cam = SimulatedCamera(line_id="L1", camera_id=camera_id, fps=None, seed=3, size=64,
                              n_frames=3, run_id=run_id)
        return [f.item_id for f in cam]

    assert items("r1", "cam0") == items("r1", "cam1")  # one run: cameras see the same parts
    assert set(items("r1", "cam0")).isdisjoint(items("r2", "cam0"))  # reject idempotency per run
