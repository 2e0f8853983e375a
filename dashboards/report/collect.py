"""What a run report shows, read from Prometheus, Redis, Kafka and the ground-truth file.

* **Prometheus** (HTTP API): range queries for the charts, built by :mod:`dashboards.promql` like
  the Grafana panels, and the counters' growth over the window (value at ``until`` minus value at
  ``since``: exact while no replica restarts inside the window).
* **Redis**: the decisions of the window are the entries of the line's result stream whose ids
  (Redis' own clock at write time, ms) fall in ``[since, until]``, read as :class:`Result`; the
  result hashes of the worst defects give their ROI-filtered masks.
* **Kafka**: a result hash holds the mask, not the frame. Each result records the topic,
  partition and offset it was consumed from, so the frame bytes are fetched back from the frames
  topic and decoded with the frame contract. When retention already deleted them, the gallery
  shows the mask alone and says so.
* **Ground truth** (optional): the JSON lines ``grdline camera --truth-out`` writes, matched by
  frame id (a replayed frame ``<id>@<run>.<loop>`` by its original id).
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dashboards import promql as pq
from inference import metrics as im
from inference.contracts import Result, result_key, stream_key

log = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """A source of the report could not be read; the message names it (URL, key, file)."""


@dataclass(frozen=True)
class Window:
    """The run: one line, a time range, the Redis key prefix its results live under."""

    line: str
    since: datetime
    until: datetime
    prefix: str

    @property
    def seconds(self) -> float:
        return (self.until - self.since).total_seconds()


@dataclass(frozen=True)
class Curve:
    label: str
    t: np.ndarray  # epoch seconds
    v: np.ndarray


@dataclass(frozen=True)
class ChartData:
    key: str
    title: str
    ylabel: str
    curves: tuple[Curve, ...]
    queries: tuple[str, ...]


@dataclass(frozen=True)
class GalleryItem:
    result: Result
    overlay_png: bytes
    frame_note: str  # where the frame came from, or why it is missing
    truth_label: str = ""  # the simulator's defect type, when ground truth is known


@dataclass
class RunData:
    window: Window
    results: list[Result]
    charts: list[ChartData]
    prometheus_totals: dict[str, float | None]
    prometheus_latency: dict[str, float | None]
    gallery: list[GalleryItem]
    truth: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


# --- Prometheus --------------------------------------------------------------------------------

class Prometheus:
    """The few calls of Prometheus' HTTP API a report needs."""

    def __init__(self, url: str, timeout_s: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        except (OSError, ValueError) as exc:
            raise ReportError(f"Prometheus at {self.url} did not answer {params}: {exc}") from exc
        if body.get("status") != "success":
            raise ReportError(f"Prometheus at {self.url} refused {params}: {body.get('error')}")
        return body["data"]["result"]

    def range(self, expr: str, start: datetime, end: datetime, step_s: float) -> list[dict]:
        return self._get("/api/v1/query_range", {
            "query": expr, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}",
            "step": f"{step_s:g}"})

    def instant(self, expr: str, at: datetime) -> float | None:
        """The sum of the vector's values at ``at`` (None when it is empty or NaN)."""
        rows = self._get("/api/v1/query", {"query": expr, "time": f"{at.timestamp():.3f}"})
        values = [float(r["value"][1]) for r in rows]
        values = [v for v in values if np.isfinite(v)]
        return float(sum(values)) if values else None


def _legend(template: str, labels: dict[str, str]) -> str:
    out = template
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def step_and_window(seconds: float) -> tuple[float, str]:
    """Range-query step and rate window for a run of ``seconds``: about 200 points, and a window
    wide enough to hold several of Ray's metric exports (every few seconds)."""
    step = max(2.0, round(seconds / 200.0))
    window = max(30, int(4 * step))
    return step, f"{window}s"


def chart_specs(line: str, window: str, topics: tuple[str, ...] = ()
                ) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(key, title, y label, [(PromQL, legend)]) of every chart of the report. ``topics``: the
    frames topics the line's results came from (consumer lag is labelled by topic, not line)."""
    sel = pq.selector(line=line)
    # a regex inside a PromQL string: the regex escapes need their backslashes escaped too
    alternatives = "|".join(re.escape(t).replace("\\", "\\\\") for t in topics)
    lag_sel = f'{{topic=~"{alternatives}"}}' if topics else ""

    def stage_sel(stage: str) -> str:
        return pq.selector(line=line, stage=stage)

    return [
        ("throughput", "Throughput", "frames / s", [
            (pq.rate(im.FRAMES_CONSUMED, sel, "", window), "consumed"),
            (pq.rate(im.FRAMES_INSPECTED, sel, "", window), "inspected"),
            (pq.ingest_rate("frames_published", sel, "", window), "published by cameras"),
        ]),
        ("defects", "Defect and reject rates", "share of frames / commands per s", [
            (pq.share(im.FRAMES_DEFECTIVE, im.FRAMES_INSPECTED, sel, "", window), "defect rate"),
            (pq.rate_or_zero(im.ITEMS_REJECTED, sel, "", window), "reject commands / s"),
        ]),
        # counts, not rates: a few events in a short run vanish in a rate (and Prometheus' rate()
        # does not see the first increment of a series that appears with it)
        ("late_dlq", "Late decisions and dead letters (cumulative in the window)", "frames", [
            (f"{pq.total(im.FRAMES_LATE, sel)} or vector(0)", "late (deadline missed)"),
            (f"{pq.total(im.FRAMES_DEAD_LETTERED, sel, 'stage')}", "dead-lettered ({{stage}})"),
        ]),
        ("e2e_latency", "Capture → decision latency", "seconds", [
            (pq.quantile(q, im.E2E_LATENCY, sel, "", window), f"p{int(q * 100)}")
            for q in (0.5, 0.9, 0.99)
        ]),
        ("stage_latency", "Latency per stage (p50 dashed, p99 solid)", "seconds", [
            (pq.quantile(q, im.STAGE_LATENCY, stage_sel(stage), "", window), f"{stage} p{int(q * 100)}")
            for stage in im.STAGES for q in (0.5, 0.99)
        ]),
        # Quantiles interpolate inside a bucket (batches of one frame read 0.5 and 0.95); the
        # window's exact mean is a summary number (collect_prometheus). Not sum/count: Ray
        # reports a histogram's _sum from bucket midpoints; not a ratio of rates either: in a
        # short run the series are born inside the window and it skews (pq.frames_per_batch).
        ("batch", "Model batch size (all lines; bucket-interpolated)", "frames per batch", [
            (pq.quantile(q, im.BATCH_SIZE, "", "", window), f"p{int(q * 100)}")
            for q in (0.5, 0.95)
        ]),
        ("lag", "Consumer lag of the frames topic(s)", "frames behind", [
            (pq.gauge(im.CONSUMER_LAG, lag_sel, "topic, partition", "max"), "{{topic}}/{{partition}}"),
        ]),
    ]


#: Charts of counter totals, drawn as their growth since the window's start.
CUMULATIVE = frozenset({"late_dlq"})

#: Counters whose growth over the window the report states (key -> inference metric).
TOTALS = {
    "consumed": im.FRAMES_CONSUMED,
    "inspected": im.FRAMES_INSPECTED,
    "defective": im.FRAMES_DEFECTIVE,
    "reject_commands": im.ITEMS_REJECTED,
    "late": im.FRAMES_LATE,
    "dead_lettered": im.FRAMES_DEAD_LETTERED,
}


def counter_growth(prom: Prometheus, metric: str, line: str, since: datetime,
                   until: datetime) -> float | None:
    """How much a counter of ``line`` grew between ``since`` and ``until`` (None: no series)."""
    expr = pq.total(metric, pq.selector(line=line))
    end = prom.instant(expr, until)
    if end is None:
        return None
    return end - (prom.instant(expr, since) or 0.0)


def collect_prometheus(prom: Prometheus, w: Window, topics: tuple[str, ...] = ()
                       ) -> tuple[list[ChartData], dict, dict]:
    step, window = step_and_window(w.seconds)
    charts = []
    for key, title, ylabel, specs in chart_specs(w.line, window, topics):
        curves = []
        for expr, legend in specs:
            for row in prom.range(expr, w.since, w.until, step):
                pts = np.array([(float(t), float(v)) for t, v in row["values"]], dtype=np.float64)
                pts = pts[np.isfinite(pts[:, 1])] if len(pts) else pts
                if not len(pts):
                    continue
                if key in CUMULATIVE and pts[0, 0] <= w.since.timestamp() + step:
                    pts[:, 1] -= pts[0, 1]  # the counter existed before the window: its growth
                curves.append(Curve(_legend(legend, row["metric"]), pts[:, 0], pts[:, 1]))
        charts.append(ChartData(key, title, ylabel, tuple(curves), tuple(e for e, _ in specs)))
    totals = {k: counter_growth(prom, m, w.line, w.since, w.until) for k, m in TOTALS.items()}
    batches = prom.instant(f"sum ({pq.name(im.BATCH_SIZE)}_count)", w.until)
    if batches is not None and totals["inspected"]:
        batches -= prom.instant(f"sum ({pq.name(im.BATCH_SIZE)}_count)", w.since) or 0.0
    span = f"{max(1, int(w.seconds))}s"
    sel = pq.selector(line=w.line)
    latency = {}
    for q in (0.5, 0.99):
        expr = (f"histogram_quantile({q}, sum by (le) "
                f"(increase({pq.name(im.E2E_LATENCY)}_bucket{sel}[{span}])))")
        latency[f"e2e_p{int(q * 100)}_s"] = prom.instant(expr, w.until)
    # exact counts over the window; the line's mean batch when it has the model to itself
    latency["frames_per_batch"] = (totals["inspected"] / batches
                                   if batches and totals["inspected"] else None)
    return charts, totals, latency


# --- Redis -------------------------------------------------------------------------------------

def read_results(client: Any, w: Window, page: int = 1000) -> tuple[list[Result], list[str]]:
    """The decisions of the window from the line's stream, last write per frame id, in order."""
    key = stream_key(w.prefix, w.line)
    lo, hi = int(w.since.timestamp() * 1000), int(w.until.timestamp() * 1000)
    notes: list[str] = []
    by_frame: dict[str, Result] = {}
    start = f"{lo}-0"
    while True:
        entries = client.xrange(key, min=start, max=f"{hi}-18446744073709551615", count=page)
        for _entry_id, fields in entries:
            r = Result.from_redis(fields)
            by_frame.pop(r.frame_id, None)  # a redelivery overwrote it: keep the last, in order
            by_frame[r.frame_id] = r
        if len(entries) < page:
            break
        last = entries[-1][0].decode() if isinstance(entries[-1][0], bytes) else entries[-1][0]
        ms, seq = (int(x) for x in last.split("-"))
        start = f"{ms}-{seq + 1}"
    first = client.xrange(key, count=1)
    if first and _trimmed(client, key):
        first_ms = int((first[0][0].decode() if isinstance(first[0][0], bytes) else first[0][0])
                       .split("-")[0])
        if first_ms > lo:
            notes.append(f"The stream {key} starts at {datetime.fromtimestamp(first_ms / 1000, UTC):%H:%M:%S} UTC, "
                         "after the window's start: it is capped, so older decisions of the window "
                         "may have been trimmed.")
    return list(by_frame.values()), notes


def _trimmed(client: Any, key: str) -> bool:
    """Whether the capped stream dropped entries (Redis >= 7 counts every entry ever added)."""
    info = client.xinfo_stream(key)
    added = info.get("entries-added", info.get(b"entries-added"))
    return added is not None and int(added) > int(info.get("length", info.get(b"length", 0)))


def worst_defects(client: Any, results: list[Result], prefix: str, n: int) -> list[Result]:
    """The ``n`` highest-scoring defective decisions, read back from their hashes (with masks)."""
    judged = [r for r in results if r.decision and r.score is not None]
    judged.sort(key=lambda r: r.score, reverse=True)
    out = []
    for r in judged[:n]:
        data = client.hgetall(result_key(prefix, r.frame_id))
        if data:
            out.append(Result.from_redis(data))
    return out


# --- Kafka: the frames behind the gallery ------------------------------------------------------

def fetch_frames(results: list[Result], timeout_s: float = 10.0) -> dict[str, tuple[np.ndarray | None, str]]:
    """frame id -> (image or None, note) read from the topic/partition/offset each result records."""
    from kafka import KafkaConsumer, TopicPartition

    from ingest.contract import decode_frame
    from ingest.errors import FrameError
    from ingest.settings import KafkaSettings

    out: dict[str, tuple[np.ndarray | None, str]] = {}
    if not results:
        return out
    consumer = KafkaConsumer(**KafkaSettings().client_kwargs(), group_id=None,
                             enable_auto_commit=False, max_partition_fetch_bytes=16 * 1024 * 1024,
                             fetch_max_bytes=64 * 1024 * 1024)
    try:
        import time

        for r in results:
            where = f"{r.topic}[{r.partition}]@{r.offset}"
            tp = TopicPartition(r.topic, r.partition)
            try:
                consumer.assign([tp])
                low = consumer.beginning_offsets([tp])[tp]
                if r.offset < low:
                    out[r.frame_id] = (None, f"frame no longer in Kafka ({where}: retention)")
                    continue
                consumer.seek(tp, r.offset)
                record = None
                deadline = time.monotonic() + timeout_s
                while record is None and time.monotonic() < deadline:
                    for rec in consumer.poll(timeout_ms=200).get(tp, []):
                        if rec.offset == r.offset:
                            record = rec
                            break
                if record is None:
                    out[r.frame_id] = (None, f"frame not read back from {where}")
                    continue
                headers = [(k, v) for k, v in (record.headers or [])]
                _, image = decode_frame(record.value, headers, check_clock=False)
                out[r.frame_id] = (image, f"frame from Kafka {where}")
            except FrameError as exc:
                out[r.frame_id] = (None, f"record at {where} is not a readable frame: {exc}")
            except Exception as exc:  # noqa: BLE001 - a missing topic must not stop the report
                log.warning("report: reading %s failed: %s", where, exc)
                out[r.frame_id] = (None, f"frame not read back from {where}: {exc}")
    finally:
        consumer.close()
    return out


# --- ground truth ------------------------------------------------------------------------------

def original_id(frame_id: str) -> str:
    """A replayed frame's id is ``<original>@<run>.<loop>``; truth is kept by the original."""
    return frame_id.split("@", 1)[0]


def load_truth(path: Path) -> dict[str, Any]:
    from ingest.simulator.camera import TruthRecord

    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ReportError(f"cannot read the truth file {path}: {exc}") from exc
    records = [TruthRecord.model_validate_json(s) for s in lines if s.strip()]
    return {t.frame_id: t for t in records}


def score_against_truth(results: list[Result], truth: dict[str, Any]) -> dict[str, Any]:
    """Decisions against ground truth, per frame and per item."""
    from ingest.simulator import COSMETIC

    n = caught = 0
    escapes: list[str] = []
    false_rejects: list[str] = []
    cosmetic_passed = cosmetic_rejected = 0
    items: dict[str, list[bool]] = {}  # item -> [truth reject, decided reject]
    for r in results:
        t = truth.get(original_id(r.frame_id))
        if t is None:
            continue
        n += 1
        if t.reject and r.decision:
            caught += 1
        elif t.reject:
            escapes.append(r.frame_id)
        elif r.decision:
            false_rejects.append(r.frame_id)
        if t.defect_type == COSMETIC:
            cosmetic_rejected += r.decision
            cosmetic_passed += not r.decision
        it = items.setdefault(t.item_id, [False, False])
        it[0] |= t.reject
        it[1] |= r.decision
    item_escapes = sum(1 for t, d in items.values() if t and not d)
    item_false = sum(1 for t, d in items.values() if d and not t)
    return {
        "frames_scored": n, "frames_unmatched": len(results) - n,
        "defective_frames": caught + len(escapes), "caught": caught,
        "escapes": len(escapes), "escape_ids": escapes[:20],
        "good_frames": n - caught - len(escapes), "false_rejects": len(false_rejects),
        "false_reject_ids": false_rejects[:20],
        "cosmetic_outside_roi": cosmetic_passed + cosmetic_rejected,
        "cosmetic_passed": cosmetic_passed, "cosmetic_rejected": cosmetic_rejected,
        "items_scored": len(items), "item_escapes": item_escapes, "item_false_rejects": item_false,
    }
