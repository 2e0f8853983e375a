"""The run report without services: ground-truth scoring, breakdowns, overlays, the written page."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np

from dashboards.report.collect import (
    ChartData,
    Curve,
    GalleryItem,
    RunData,
    Window,
    chart_specs,
    original_id,
    score_against_truth,
    step_and_window,
)
from dashboards.report.render import group_rows, overlay_png, write_report
from inference.contracts import Result, mask_regions, mask_to_png
from ingest.simulator import COSMETIC
from ingest.simulator.camera import TruthRecord

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _result(i: int, decision: bool, camera: str = "cam0", score: float = 0.5, mask=None,
            recipe: str = "vials") -> Result:
    mask = np.zeros((32, 32), bool) if mask is None else mask
    area, boxes = mask_regions(mask)
    return Result(frame_id=f"f{i}", item_id=f"i{i // 2}", line_id="L1", camera_id=camera,
                  recipe=recipe, captured_at=T0 + timedelta(seconds=i),
                  decided_at=T0 + timedelta(seconds=i, milliseconds=40), score=score,
                  decision=decision, threshold=0.5, model_version="v1", roi_id=f"recipe:{recipe}",
                  defect_area=area, boxes=boxes, mask_png=mask_to_png(mask), topic="frames",
                  partition=0, offset=i)


def _truth(i: int, reject: bool, defect_type: str = "good") -> TruthRecord:
    return TruthRecord(frame_id=f"f{i}", item_id=f"i{i // 2}", line_id="L1", camera_id="cam0",
                       defect_type=defect_type, defect_kind=None, reject=reject,
                       defect_area_px=0, defect_bbox=None)


def test_decisions_are_scored_against_truth_per_frame_and_item():
    results = [_result(0, True), _result(1, False), _result(2, True), _result(3, False),
               _result(4, False), _result(5, True)]
    truth = {t.frame_id: t for t in (
        _truth(0, True), _truth(1, True), _truth(2, False), _truth(3, False),
        _truth(4, False, COSMETIC), _truth(5, False, COSMETIC))}
    s = score_against_truth(results, truth)
    assert s["frames_scored"] == 6 and s["caught"] == 1
    assert s["escapes"] == 1 and s["escape_ids"] == ["f1"]
    assert s["false_rejects"] == 2 and set(s["false_reject_ids"]) == {"f2", "f5"}
    assert (s["cosmetic_outside_roi"], s["cosmetic_passed"], s["cosmetic_rejected"]) == (2, 1, 1)
    # items: i0 truth reject & rejected; i1 good but rejected; i2 cosmetic, one frame rejected
    assert s["items_scored"] == 3 and s["item_escapes"] == 0 and s["item_false_rejects"] == 2


def test_a_replayed_frame_is_matched_by_its_original_id():
    assert original_id("L1-cam0-000042@ab12.0") == "L1-cam0-000042"
    assert original_id("plain") == "plain"


def test_breakdown_rows_count_frames_defects_and_items():
    rows = group_rows([_result(0, True), _result(1, True, "cam1"), _result(2, False, "cam1")],
                      lambda r: (r.camera_id,))
    assert [(r["key"], r["frames"], r["defective"], r["items_rejected"]) for r in rows] == [
        (("cam0",), 1, 1, 1), (("cam1",), 2, 1, 1)]


def test_the_overlay_shows_the_mask_on_the_frame_and_survives_a_missing_frame():
    import cv2

    mask = np.zeros((32, 32), bool)
    mask[10:14, 20:26] = True
    r = _result(0, True, mask=mask)
    frame = np.full((32, 32), 100, np.uint8)
    tile = cv2.imdecode(np.frombuffer(overlay_png(frame, r), np.uint8), cv2.IMREAD_COLOR)
    scale = tile.shape[0] // 32
    assert tile.shape[0] >= 224 and tile.shape[0] == tile.shape[1]
    inside = tile[12 * scale, 22 * scale].astype(int)
    outside = tile[2 * scale + 1, 2 * scale + 1].astype(int)
    assert inside[2] > inside[0] + 50  # red (BGR) where the mask is
    assert abs(outside[2] - outside[0]) < 10  # grey elsewhere
    assert cv2.imdecode(np.frombuffer(overlay_png(None, r), np.uint8), cv2.IMREAD_COLOR) is not None


def test_rate_windows_fit_short_and_long_runs():
    assert step_and_window(30) == (2.0, "30s")
    step, window = step_and_window(3600)
    assert step == 18 and window == "72s"
    specs = {k: queries for k, _, _, queries in chart_specs("L1", "30s", ("frames.replay",))}
    assert list(specs) == ["throughput", "defects", "late_dlq", "e2e_latency", "stage_latency",
                           "batch", "lag"]
    # a topic's dots are escaped for the regex, and the escape escaped for the PromQL string
    assert 'topic=~"frames\\\\.replay"' in specs["lag"][0][0]
    assert all('line="L1"' in q for q, _ in specs["throughput"][:2])


def test_the_page_references_only_files_it_wrote(tmp_path):
    mask = np.zeros((32, 32), bool)
    mask[4:8, 4:8] = True
    results = [_result(i, i % 3 == 0, f"cam{i % 2}", score=i / 10, mask=mask if i % 3 == 0 else None)
               for i in range(10)]
    t = np.array([T0.timestamp() + k for k in range(5)], float)
    charts = [ChartData("throughput", "Throughput", "fps", (Curve("consumed", t, t * 0 + 3),), ("q",)),
              ChartData("lag", "Lag", "frames", (), ("q",))]
    window = Window("L1", T0, T0 + timedelta(minutes=1), "grdline")
    gallery = [GalleryItem(results[0], overlay_png(None, results[0]), "frame not fetched", "crack")]
    data = RunData(window, results, charts, {"inspected": 10.0, "consumed": None}, {"e2e_p99_s": 0.2},
                   gallery, score_against_truth(results, {}), ["a note"])
    page = write_report(data, tmp_path)
    html = page.read_text()
    import re

    srcs = re.findall(r'src="([^"]+)"', html)
    assert srcs and all((tmp_path / s).is_file() for s in srcs)
    assert "http://" not in html and "https://" not in html  # self-contained
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["redis"]["frames"] == 10 and summary["redis"]["defective"] == 4
    assert summary["chart_points"] == {"throughput": 5, "lag": 0, "scores": 10}
    assert 'id="redis-frames">10<' in html and "crack" in html and "a note" in html
