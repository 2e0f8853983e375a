"""The live terminal view: its rows from metric values, its queries, and the plain (non-TTY) output."""

from __future__ import annotations

import io
import math
import re
import time
from dataclasses import fields

from dashboards import live
from dashboards import promql as pq

FULL = live.LiveSample(
    frames_per_s=19.62, inspected=200, defective=62, rejects=31, late=1, p95_latency_s=0.1234,
    consumer_lag=3, model_replicas=2, ingress_replicas=1,
)


def test_rows_format_every_value():
    assert live.rows(FULL) == [
        ("frames/s", "19.6"),
        ("frames inspected", "200"),
        ("defect rate", "31.0 % (62 of 200)"),
        ("rejects", "31"),
        ("late frames", "1"),
        ("p95 capture->decision, 1 min", "123 ms"),
        ("consumer lag", "3"),
        ("replicas model / ingress", "2 / 1"),
    ]


def test_rows_before_any_frame_show_dashes():
    rows = dict(live.rows(live.LiveSample()))
    assert rows["frames/s"] == "-"
    assert rows["defect rate"] == "-"
    assert rows["p95 capture->decision, 1 min"] == "-"
    assert rows["replicas model / ingress"] == "- / -"


def test_counters_without_a_series_read_zero_once_frames_flow():
    # Ray exports a counter only once it was incremented: no defect yet = no series
    rows = dict(live.rows(live.LiveSample(inspected=40)))
    assert rows["defect rate"] == "0.0 % (0 of 40)"
    assert rows["rejects"] == "0"
    assert rows["late frames"] == "0"
    assert dict(live.rows(live.LiveSample()))["rejects"] == "-"


def test_queries_use_only_series_the_code_emits():
    exprs = live.queries("L1", "grdline")
    assert set(exprs) == {f.name for f in fields(live.LiveSample)}
    for expr in exprs.values():
        for series in re.findall(r"\b(ray_[a-z0-9_]+)", expr):
            assert series in pq.KNOWN_SERIES, (series, expr)
    assert 'line="L1"' in exprs["frames_per_s"]
    assert 'application="grdline"' in exprs["model_replicas"]
    assert 'deployment!~' in exprs["model_replicas"] and 'deployment=~' in exprs["ingress_replicas"]


def test_read_sample_maps_fields_and_nan_to_none():
    exprs = {f.name: f.name for f in fields(live.LiveSample)}
    answers = {"frames_per_s": 5.0, "p95_latency_s": math.nan, "rejects": None}
    sample = live.read_sample(lambda expr: answers.get(expr), exprs)
    assert sample.frames_per_s == 5.0
    assert sample.p95_latency_s is None  # histogram_quantile over no observations is NaN
    assert sample.rejects is None


def test_plain_line_holds_every_row():
    line = live.plain_line(FULL, 12.3)
    assert line.startswith("[live    12s]")
    for label, text in live.rows(FULL):
        assert f"{label}={text}" in line


def test_view_prints_plain_lines_when_not_a_terminal():
    out = io.StringIO()  # isatty() is False
    exprs = {f.name: f.name for f in fields(live.LiveSample)}
    view = live.LiveView(lambda expr: 7.0, exprs, "L1", plain_every_s=0.01, out=out)
    with view:
        deadline = time.monotonic() + 5
        while "frames/s=7.0" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "frames/s=7.0" in out.getvalue()
    assert view.last.frames_per_s == 7.0
