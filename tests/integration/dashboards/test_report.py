"""The report of a real short run renders in headless Chromium (charts and gallery images load,
none broken or empty) and states the numbers Redis and Prometheus hold for that run.

Chromium is Debian's ``chromium`` (deploy/local/bootstrap.sh installs it). It runs with the
background-networking features off: this machine's closed network refuses their connections.
``GRDLINE_REPORT_KEEP=DIR`` copies the report and its screenshot there (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dashboards.report.build import make_report
from inference import metrics as im
from inference.contracts import Result, result_key

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)


def chromium(*args: str, user_data: Path, timeout_s: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Debian's chromium is not installed (deploy/local/bootstrap.sh installs it)")
    user_data.mkdir(parents=True, exist_ok=True)
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *args],
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def prometheus_value(url: str, expr: str, at) -> float:
    q = urllib.parse.urlencode({"query": expr, "time": f"{at.timestamp():.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        return sum(float(x["value"][1]) for x in json.load(r)["data"]["result"])


def test_report_of_a_short_run_renders_and_matches_redis_and_prometheus(
    short_run, prometheus_url, redis_client, tmp_path
):
    out = tmp_path / "report"
    page = make_report(short_run.line, short_run.since, short_run.until, out,
                       prefix=short_run.prefix, truth_path=short_run.truth_path,
                       prometheus_url=prometheus_url, gallery_size=8)
    summary = json.loads((out / "report.json").read_text())
    html = page.read_text()

    # --- the browser loads every chart and gallery image ----------------------------------------
    dom = chromium("--virtual-time-budget=15000", "--dump-dom", page.as_uri(),
                   user_data=tmp_path / "chrome-dom")
    assert 'data-images-ok="yes"' in dom.stdout, (dom.stdout[-2000:], dom.stderr[-2000:])
    sources = re.findall(r'<img[^>]*src="([^"]+)"', html)
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom.stdout)]
    assert len(widths) == len(sources) and all(w > 0 for w in widths), widths
    charts = [s for s in sources if s.startswith("chart-")]
    gallery = [s for s in sources if s.startswith("defect-")]
    assert len(charts) == 8 and gallery
    shot = tmp_path / "report.png"
    chromium("--window-size=1400,2600", f"--screenshot={shot}", "--virtual-time-budget=15000",
             page.as_uri(), user_data=tmp_path / "chrome-shot")
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] == 1400 and float(image.std()) > 10

    # --- charts are not empty: every one drew points, and no PNG is a blank canvas -------------
    assert all(n > 0 for n in summary["chart_points"].values()), summary["chart_points"]
    for name in charts:
        png = cv2.imread(str(out / name), cv2.IMREAD_GRAYSCALE)
        assert png is not None and float(png.std()) > 5, name
    assert all(g["note"].startswith("frame from Kafka") for g in summary["gallery"]), summary["gallery"]

    # --- the numbers are Redis' -----------------------------------------------------------------
    pipe = redis_client.pipeline(transaction=False)
    for fid in [*short_run.frame_ids, short_run.unjudged_id]:
        pipe.hgetall(result_key(short_run.prefix, fid))
    stored = [Result.from_redis(h) for h in pipe.execute() if h]
    assert len(stored) == len(short_run.frame_ids) + 1
    unjudged = [r for r in stored if r.failsafe == "invalid_input"]
    assert [(r.frame_id, r.decision) for r in unjudged] == [(short_run.unjudged_id, True)]  # no verdict, no pass
    judged = [r for r in stored if r.failsafe != "invalid_input"]
    redis_numbers = summary["redis"]
    assert redis_numbers["frames"] == len(stored)
    assert redis_numbers["defective"] == sum(r.decision for r in stored)
    assert redis_numbers["late"] == sum(r.late for r in stored) == 2
    assert redis_numbers["items_defective"] == len({r.item_id for r in stored if r.decision})
    assert f'id="redis-frames">{len(stored)}<' in dom.stdout
    worst = sorted((r for r in stored if r.decision and r.score is not None),
                   key=lambda r: r.score, reverse=True)[:8]
    assert [g["frame_id"] for g in summary["gallery"]] == [r.frame_id for r in worst]

    # --- ... and Prometheus' (the counters began inside the window: growth = value at until) -----
    sel = f'{{line="{short_run.line}"}}'
    prom = summary["prometheus"]
    for key, metric in (("consumed", im.FRAMES_CONSUMED), ("inspected", im.FRAMES_INSPECTED),
                        ("defective", im.FRAMES_DEFECTIVE), ("late", im.FRAMES_LATE),
                        ("dead_lettered", im.FRAMES_DEAD_LETTERED),
                        ("reject_commands", im.ITEMS_REJECTED)):
        expected = prometheus_value(prometheus_url, f"sum({im.prometheus_name(metric)}{sel})",
                                    short_run.until)
        assert prom[key] == pytest.approx(expected), key
        assert f'id="prom-{key}">{expected:.0f}<' in dom.stdout, key
    assert prom["consumed"] == short_run.records_sent and prom["dead_lettered"] == 1
    assert prom["inspected"] + prom["late"] == len(judged)
    assert prom["defective"] == sum(r.decision for r in judged if not r.late)
    p99 = summary["prometheus_latency"]["e2e_p99_s"]
    assert p99 is not None and 0 < p99 < 10
    per_batch = summary["prometheus_latency"]["frames_per_batch"]
    assert per_batch is not None and 0.5 < per_batch <= short_run.cfg.tuning.max_batch_size

    # --- ground truth: every decision scored, counts consistent --------------------------------
    truth = summary["truth"]
    assert truth["frames_scored"] == len(judged)  # the camera's truth file knows the frames it sent
    assert truth["caught"] + truth["escapes"] == truth["defective_frames"]
    assert truth["cosmetic_outside_roi"] > 0
    assert f'id="truth-escapes">{truth["escapes"]}<' in dom.stdout

    keep = os.environ.get("GRDLINE_REPORT_KEEP")
    if keep:
        shutil.copytree(out, Path(keep), dirs_exist_ok=True)
        shutil.copy(shot, Path(keep) / "screenshot.png")
