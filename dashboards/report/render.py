"""Draw a run report: matplotlib charts, mask overlays, breakdown tables, one HTML page (jinja2).

The page is self-contained (inline CSS, no network): it references only the PNGs written next to
it. ``report.json`` beside it holds the same numbers for machines (tests, a CI gate). A few lines
of inline script mark, after the page loaded, whether every image decoded (``data-images-ok`` on
``<body>``, ``data-natural-width`` on each image), so a headless browser can check the page.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from dashboards.report.collect import ChartData, GalleryItem, RunData
from inference.contracts import Result

#: Overlay colours (BGR for OpenCV): defect mask, boxes, ROI outline.
MASK_BGR = (40, 40, 230)
BOX_BGR = (0, 215, 255)
ROI_BGR = (80, 200, 80)
MIN_TILE_PX = 224


def overlay_png(image: np.ndarray | None, result: Result) -> bytes:
    """The frame with its ROI-filtered mask in red, defect boxes in yellow and the recipe ROI
    outline in green, as PNG; a black frame when the image is missing."""
    import cv2

    mask = result.mask()
    if image is None:
        h, w = mask.shape if mask is not None else (MIN_TILE_PX, MIN_TILE_PX)
        bgr = np.zeros((h, w, 3), np.uint8)
    else:
        img = np.asarray(image)
        if img.dtype != np.uint8:
            lo, hi = float(img.min()), float(img.max())
            img = ((img - lo) / max(hi - lo, 1e-9) * 255).astype(np.uint8)
        if img.ndim == 2 or img.shape[2] == 1:
            bgr = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
        else:
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    scale = max(1, int(np.ceil(MIN_TILE_PX / max(h, w))))
    if mask is not None:
        if mask.shape != (h, w):
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        tint = np.zeros_like(bgr)
        tint[:] = MASK_BGR
        bgr = np.where(mask[..., None], (0.45 * bgr + 0.55 * tint).astype(np.uint8), bgr)
    bgr = cv2.resize(bgr, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    roi = _recipe_roi(result, h, w)
    if roi is not None:
        big = cv2.resize(roi.astype(np.uint8), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(bgr, contours, -1, ROI_BGR, 1)
    for b in result.boxes:
        cv2.rectangle(bgr, (b.x * scale, b.y * scale), ((b.x + b.w) * scale - 1, (b.y + b.h) * scale - 1),
                      BOX_BGR, 1)
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError(f"PNG encoding of the overlay of frame {result.frame_id} failed")
    return buf.tobytes()


def _recipe_roi(result: Result, h: int, w: int) -> np.ndarray | None:
    """The fixed ROI of a simulator recipe (``roi_id`` ``recipe:<name>``), cropped to the frame."""
    if not result.roi_id.startswith("recipe:"):
        return None
    from ingest.simulator import SimulatorError, roi_mask_for_recipe

    try:
        roi = np.asarray(roi_mask_for_recipe(result.roi_id.split(":", 1)[1], max(h, w)))
    except (SimulatorError, KeyError, ValueError):
        return None
    return roi[:h, :w] > 0


# --- numbers from the results ------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def group_rows(results: list[Result], key: Any) -> list[dict[str, Any]]:
    """One row per group: frames, defective, defect rate, late, score and latency statistics."""
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    rows = []
    for k in sorted(groups):
        rs = groups[k]
        total = [r.timings_ms.total for r in rs if not r.late]
        scores = [r.score for r in rs if r.score is not None]
        defective = sum(r.decision for r in rs)
        rows.append({
            "key": k, "frames": len(rs), "defective": defective,
            "defect_rate": defective / len(rs), "late": sum(r.late for r in rs),
            "items_rejected": len({r.item_id for r in rs if r.decision}),
            "score_mean": float(np.mean(scores)) if scores else None,
            "latency_p50_ms": _pct(total, 50), "latency_p99_ms": _pct(total, 99),
        })
    return rows


def redis_summary(results: list[Result]) -> dict[str, Any]:
    return {
        "frames": len(results),
        "defective": sum(r.decision for r in results),
        "late": sum(r.late for r in results),
        "items": len({r.item_id for r in results}),
        "items_defective": len({r.item_id for r in results if r.decision}),
        "cameras": sorted({r.camera_id for r in results}),
        "recipes": sorted({r.recipe for r in results}),
        "model_versions": sorted({r.model_version for r in results}),
        "first_decision": min((r.decided_at for r in results), default=None),
        "last_decision": max((r.decided_at for r in results), default=None),
    }


# --- charts ------------------------------------------------------------------------------------

def _figure(title: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 3.0), dpi=100)
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    return plt, fig, ax


def plot_chart(chart: ChartData, path: Path) -> int:
    """Draw one time-series chart; returns the number of points drawn (0 = an empty chart,
    which is drawn with a 'no data' note rather than left blank)."""
    from datetime import UTC, datetime

    import matplotlib.dates as mdates

    plt, fig, ax = _figure(chart.title, chart.ylabel)
    points = 0
    for c in chart.curves:
        times = [datetime.fromtimestamp(t, UTC) for t in c.t]
        style = "--" if c.label.endswith("p50") and chart.key == "stage_latency" else "-"
        ax.plot(times, c.v, style, linewidth=1.4, label=c.label)
        points += len(c.v)
    if points:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
        ax.legend(fontsize=7, loc="upper left", ncol=min(3, max(1, len(chart.curves))),
                  frameon=False)
        ax.set_ylim(bottom=0)
    else:
        ax.text(0.5, 0.5, "no data in this window", ha="center", va="center",
                transform=ax.transAxes, color="grey")
    ax.set_xlabel("UTC", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return points


def plot_scores(results: list[Result], path: Path) -> int:
    """Histogram of the scores per camera with the threshold(s) used."""
    plt, fig, ax = _figure("Score distribution per camera", "frames")
    by_cam: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.score is not None:
            by_cam[r.camera_id].append(r.score)
    n = 0
    if by_cam:
        all_scores = np.concatenate([np.asarray(v) for v in by_cam.values()])
        bins = np.linspace(float(all_scores.min()), float(all_scores.max()) + 1e-9, 40)
        for cam in sorted(by_cam):
            ax.hist(by_cam[cam], bins=bins, alpha=0.55, label=cam)
            n += len(by_cam[cam])
        for t in sorted({r.threshold for r in results if r.threshold is not None}):
            ax.axvline(t, color="black", linestyle="--", linewidth=1)
        ax.legend(fontsize=7, frameon=False)
        ax.set_xlabel("score (dashed: threshold)", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no scored decisions", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return n


# --- the page ----------------------------------------------------------------------------------

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>GRD-Line run report: {{ w.line }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;font-size:13px} .note{background:#fff6df;padding:6px 10px;font-size:13px;margin:4px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:130px}
.card b{display:block;font-size:20px} .card span{font-size:12px;color:#666}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:8px}
.charts img{width:100%;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f5f5f5} td:first-child,th:first-child{text-align:left}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
.tile{width:240px;font-size:12px} .tile img{width:224px;image-rendering:pixelated;border:1px solid #ccc}
.bad{color:#b00020;font-weight:600}
</style></head>
<body data-images-ok="pending">
<h1>GRD-Line run report — line {{ w.line }}</h1>
<div class="sub">{{ w.since.strftime("%Y-%m-%d %H:%M:%S") }} → {{ w.until.strftime("%Y-%m-%d %H:%M:%S") }} UTC
({{ "%.0f"|format(w.seconds) }} s) · results namespace <code>{{ w.prefix }}</code> ·
model version(s) {{ s.redis.model_versions|join(", ") or "—" }} · generated {{ generated }}</div>
{% for n in notes %}<div class="note">{{ n }}</div>{% endfor %}

<h2>Summary</h2>
<div class="cards" id="summary">
<div class="card"><b id="redis-frames">{{ s.redis.frames }}</b><span>frames decided (Redis)</span></div>
<div class="card"><b id="redis-defective">{{ s.redis.defective }}</b><span>defective decisions (Redis)</span></div>
<div class="card"><b id="redis-items-defective">{{ s.redis.items_defective }}</b><span>items to reject (Redis)</span></div>
<div class="card"><b id="redis-late">{{ s.redis.late }}</b><span>late decisions (Redis)</span></div>
{% for key, label in prom_labels %}<div class="card"><b id="prom-{{ key }}">{{ fmt(s.prometheus.get(key)) }}</b><span>{{ label }} (Prometheus)</span></div>
{% endfor %}
<div class="card"><b id="prom-e2e-p50">{{ ms(s.prometheus_latency.get("e2e_p50_s")) }}</b><span>capture → decision p50</span></div>
<div class="card"><b id="prom-e2e-p99">{{ ms(s.prometheus_latency.get("e2e_p99_s")) }}</b><span>capture → decision p99</span></div>
<div class="card"><b id="prom-frames-per-batch">{{ fmt(s.prometheus_latency.get("frames_per_batch"), 2) }}</b><span>inspected frames per model batch</span></div>
</div>

{% if s.truth %}<h2>Decisions against ground truth</h2>
<table id="truth"><tr><th></th><th>frames</th><th>items</th></tr>
<tr><td>scored (frames with ground truth)</td><td>{{ s.truth.frames_scored }}</td><td>{{ s.truth.items_scored }}</td></tr>
<tr><td>defective (defect inside the ROI)</td><td>{{ s.truth.defective_frames }}</td><td></td></tr>
<tr><td>caught</td><td>{{ s.truth.caught }}</td><td></td></tr>
<tr><td>escapes (defective, passed)</td><td class="{{ 'bad' if s.truth.escapes }}" id="truth-escapes">{{ s.truth.escapes }}</td><td class="{{ 'bad' if s.truth.item_escapes }}">{{ s.truth.item_escapes }}</td></tr>
<tr><td>false rejects (good, rejected)</td><td class="{{ 'bad' if s.truth.false_rejects }}" id="truth-false-rejects">{{ s.truth.false_rejects }}</td><td>{{ s.truth.item_false_rejects }}</td></tr>
<tr><td>outside-ROI cosmetics passed / seen</td><td id="truth-cosmetic-passed">{{ s.truth.cosmetic_passed }} / {{ s.truth.cosmetic_outside_roi }}</td><td></td></tr>
</table>
{% if s.truth.frames_unmatched %}<div class="note">{{ s.truth.frames_unmatched }} decisions had no ground-truth record.</div>{% endif %}
{% endif %}

<h2>Over time (Prometheus)</h2>
<div class="charts">{% for c in charts %}<img class="chart" src="{{ c.png }}" alt="{{ c.title }}">{% endfor %}</div>

<h2>Worst defects (highest scores) — ROI-filtered mask in red, boxes yellow, ROI green</h2>
<div class="gallery" id="gallery">{% for g in gallery %}<div class="tile"><img src="{{ g.png }}" alt="frame {{ g.frame_id }}">
<div><b>{{ "%.4f"|format(g.score) }}</b> · {{ g.camera_id }} · {{ g.recipe }}{% if g.truth %} · truth: {{ g.truth }}{% endif %}</div>
<div>{{ g.frame_id }}</div><div class="sub">area {{ g.area }} px · {{ g.note }}</div></div>
{% else %}<div class="sub">No defective decision in this window.</div>{% endfor %}</div>

<h2>Per camera</h2>{{ table(per_camera, "camera") }}
<h2>Per recipe and model version</h2>{{ table(per_recipe, "recipe / model version") }}
<script>
window.addEventListener("load", function () {
  var ok = true;
  document.querySelectorAll("img").forEach(function (img) {
    img.setAttribute("data-natural-width", String(img.naturalWidth));
    if (!img.complete || img.naturalWidth === 0) { ok = false; }
  });
  document.body.setAttribute("data-images-ok", ok ? "yes" : "no");
});
</script>
</body></html>
"""

TABLE = """<table><tr><th>{{ label }}</th><th>frames</th><th>defective</th><th>defect rate</th>
<th>items rejected</th><th>late</th><th>mean score</th><th>latency p50 (ms)</th><th>p99 (ms)</th></tr>
{% for r in rows %}<tr><td>{{ r.key|join(" / ") }}</td><td>{{ r.frames }}</td><td>{{ r.defective }}</td>
<td>{{ "%.1f%%"|format(100 * r.defect_rate) }}</td><td>{{ r.items_rejected }}</td><td>{{ r.late }}</td>
<td>{{ num(r.score_mean, 4) }}</td><td>{{ num(r.latency_p50_ms, 1) }}</td><td>{{ num(r.latency_p99_ms, 1) }}</td></tr>
{% endfor %}</table>"""

PROM_LABELS = [
    ("consumed", "frames consumed"), ("inspected", "frames inspected"),
    ("defective", "defective frames"), ("reject_commands", "reject commands sent"),
    ("late", "late frames"), ("dead_lettered", "dead letters"),
]


def _num(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def write_report(data: RunData, out: Path) -> Path:
    """Write ``index.html``, its PNGs and ``report.json`` under ``out``; returns the page's path."""
    from datetime import UTC, datetime

    import jinja2

    out.mkdir(parents=True, exist_ok=True)
    chart_rows = []
    points: dict[str, int] = {}
    for c in data.charts:
        name = f"chart-{c.key}.png"
        points[c.key] = plot_chart(c, out / name)
        chart_rows.append({"png": name, "title": c.title})
    points["scores"] = plot_scores(data.results, out / "chart-scores.png")
    chart_rows.append({"png": "chart-scores.png", "title": "Score distribution"})

    gallery_rows = []
    for i, g in enumerate(data.gallery):
        name = f"defect-{i:02d}.png"
        (out / name).write_bytes(g.overlay_png)
        gallery_rows.append(_gallery_row(g, name))

    summary = {
        "line": data.window.line, "prefix": data.window.prefix,
        "since": data.window.since.isoformat(), "until": data.window.until.isoformat(),
        "redis": redis_summary(data.results),
        "prometheus": data.prometheus_totals,
        "prometheus_latency": data.prometheus_latency,
        "truth": data.truth,
        "chart_points": points,
        "gallery": [{k: g[k] for k in ("frame_id", "png", "score", "note")} for g in gallery_rows],
        "notes": data.notes,
    }
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    table = env.from_string(TABLE)
    page = env.from_string(TEMPLATE).render(
        w=data.window, s=summary, notes=data.notes, charts=chart_rows, gallery=gallery_rows,
        prom_labels=PROM_LABELS, fmt=_num, ms=lambda v: "—" if v is None else f"{1000 * v:.0f} ms",
        per_camera=group_rows(data.results, lambda r: (r.camera_id,)),
        per_recipe=group_rows(data.results, lambda r: (r.recipe, r.model_version or "?")),
        table=lambda rows, label: jinja2.utils.markupsafe.Markup(
            table.render(rows=rows, label=label, num=_num)),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    (out / "index.html").write_text(page)
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return out / "index.html"


def _gallery_row(g: GalleryItem, png: str) -> dict[str, Any]:
    r = g.result
    return {"png": png, "frame_id": r.frame_id, "score": r.score or 0.0, "camera_id": r.camera_id,
            "recipe": r.recipe, "area": r.defect_area, "note": g.frame_note,
            "truth": g.truth_label}
