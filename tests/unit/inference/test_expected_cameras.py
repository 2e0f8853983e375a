"""The expected cameras of a line: configured in ServeAppConfig, exported by the ingress as a held
gauge (what GrdlineNoFramesConsumed compares consumed frames with)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inference import metrics as M
from inference.config import ServeAppConfig


def _cfg(**over) -> ServeAppConfig:
    return ServeAppConfig(standin={}, **over)


def test_expected_cameras_are_configured_and_checked():
    cfg = _cfg(expected_cameras=[{"line": "L1", "camera": "cam0"}, {"line": "L1", "camera": "cam1"}])
    assert [(c.line, c.camera) for c in cfg.expected_cameras] == [("L1", "cam0"), ("L1", "cam1")]
    assert _cfg().expected_cameras == []
    with pytest.raises(ValidationError, match=r"expected_cameras\.0\.camera"):
        _cfg(expected_cameras=[{"line": "L1", "camera": ""}])
    with pytest.raises(ValidationError, match="expected_cameras"):
        _cfg(expected_cameras=[{"line": "L1", "camera": "cam0", "topic": "x"}])


class _FakeRecorders:
    def __init__(self) -> None:
        self.held: list[tuple[str, float, dict]] = []

    def hold(self, name: str, value: float, **tags: str) -> None:
        self.held.append((name, value, tags))


def test_the_ingress_holds_one_gauge_per_expected_camera_and_reserves_its_labels():
    cfg = _cfg(expected_cameras=[{"line": "L1", "camera": "cam0"}, {"line": "L1", "camera": "cam1"}],
               topics={"frames": "frames-x"}, limits={"metric_label_values": 2})
    m, labels = _FakeRecorders(), M.LabelCap(cfg.limits.metric_label_values)
    M.hold_expected_cameras(m, labels, cfg)
    assert m.held == [(M.CAMERA_EXPECTED, 1, {"topic": "frames-x", "line": "L1", "camera": c})
                      for c in ("cam0", "cam1")]
    # the expected pairs keep their names; a camera nobody expected is the one capped
    assert labels.tags("L9", "stray") == {"line": M.OTHER_LABEL, "camera": M.OTHER_LABEL}
    assert labels.tags("L1", "cam1") == {"line": "L1", "camera": "cam1"}


def test_no_expected_camera_is_logged(caplog):
    m = _FakeRecorders()
    M.hold_expected_cameras(m, M.LabelCap(8), _cfg())
    assert m.held == [] and "expected_cameras is empty" in caplog.text


class _FakeGauge:
    def __init__(self) -> None:
        self.sets: list[tuple[float, dict | None]] = []

    def set(self, value: float, tags: dict | None = None) -> None:
        self.sets.append((value, tags))


def test_a_held_gauge_is_handed_to_ray_at_every_flush_a_set_one_once():
    r = M.Recorders((M.CAMERA_EXPECTED, M.INFLIGHT_FRAMES), flush_interval_s=3600)
    r._m = {M.CAMERA_EXPECTED: _FakeGauge(), M.INFLIGHT_FRAMES: _FakeGauge()}
    r.hold(M.CAMERA_EXPECTED, 1, line="L1", camera="cam0", topic="t")
    r.set(M.INFLIGHT_FRAMES, 5)
    r.flush()
    r.flush()
    assert r._m[M.CAMERA_EXPECTED].sets == [(1.0, {"camera": "cam0", "line": "L1", "topic": "t"})] * 2
    assert r._m[M.INFLIGHT_FRAMES].sets == [(5.0, None)]
