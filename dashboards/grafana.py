"""Grafana dashboards as code: throughput, latency, defect rates and the health of the line.

Every query is built from the metric names that ``inference.metrics`` and ``ingest.metrics``
define (never spelled here), so renaming a metric cannot silently break a panel; the integration
tests run every panel's query against the real Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inference import metrics as im
from ingest import metrics as gm

DASHBOARD_UID = "grdline-line"
DASHBOARD_TITLE = "GRD-Line: inspection line"
#: Template variable holding the selected production lines.
LINE_VAR = "line"


def _c(name: str) -> str:
    """Series name of an inference counter/gauge as Prometheus stores it."""
    return im.prometheus_name(name)


def _bucket(name: str) -> str:
    return im.prometheus_name(name) + "_bucket"


SEL = f'{{line=~"${LINE_VAR}"}}'


def _rate(name: str, by: str = "line") -> str:
    return f"sum by ({by}) (rate({_c(name)}{SEL}[1m]))"


def _quantile(q: float, name: str, by: str = "line", selector: str = SEL) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, {by}) (rate({_bucket(name)}{selector}[1m])))"
        if by
        else f"histogram_quantile({q}, sum by (le) (rate({_bucket(name)}[1m])))"
    )


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def line_dashboard_rows() -> tuple[Row, ...]:
    """The panels of the line dashboard, grouped in rows."""
    throughput = Row("Throughput", (
        Panel("Frames consumed / s", (Target(_rate(im.FRAMES_CONSUMED), "{{line}}"),),
              unit="fps", description="Frames polled off the frames topic by the ingress."),
        Panel("Frames inspected / s", (Target(_rate(im.FRAMES_INSPECTED), "{{line}}"),),
              unit="fps", description="Frames decided by GRD-Net in time."),
        Panel("Frames published by cameras / s", (
            Target(f"sum by (line) (rate({gm.METRIC_NAMES['frames_published']}{SEL}[1m]))",
                   "{{line}}"),), unit="fps"),
        Panel("Model batch size (mean)", (Target(
            f"sum(rate({_c(im.BATCH_SIZE)}_sum[1m])) / sum(rate({_c(im.BATCH_SIZE)}_count[1m]))",
            "mean batch"),), description="Frames per GRD-Net batch across model replicas."),
    ))
    latency = Row("Latency", (
        Panel("Capture → decision latency", (
            Target(_quantile(0.5, im.E2E_LATENCY), "p50 {{line}}"),
            Target(_quantile(0.99, im.E2E_LATENCY), "p99 {{line}}"),
        ), unit="s"),
        Panel("Per-stage latency p99", (
            Target(_quantile(0.99, im.STAGE_LATENCY, by="stage"), "{{stage}}"),), unit="s",
            description="queue, decode, wait (batching), model and sinks."),
        Panel("Model batch latency", (
            Target(_quantile(0.5, im.MODEL_LATENCY, by=""), "p50"),
            Target(_quantile(0.99, im.MODEL_LATENCY, by=""), "p99"),
        ), unit="s"),
    ))
    quality = Row("Defects and rejects", (
        Panel("Defect rate", (Target(
            f"{_rate(im.FRAMES_DEFECTIVE)} / clamp_min({_rate(im.FRAMES_INSPECTED)}, 1e-9)",
            "{{line}}"),), unit="percentunit"),
        Panel("Rejects / min", (Target(
            f"60 * {_rate(im.ITEMS_REJECTED)}", "{{line}}"),), unit="short",
            description="Reject commands sent to the actuator topic (one per item)."),
        Panel("Late frames / s (deadline missed)", (Target(_rate(im.FRAMES_LATE), "{{line}}"),),
              unit="fps"),
        Panel("Dead-lettered frames / s", (Target(
            _rate(im.FRAMES_DEAD_LETTERED, by="line, stage"), "{{line}} {{stage}}"),), unit="fps"),
    ))
    health = Row("Backpressure and scaling", (
        Panel("Consumer lag (frames)", (Target(
            f"sum by (topic) ({_c(im.CONSUMER_LAG)})", "{{topic}}"),)),
        Panel("Frames in flight", (Target(f"sum({_c(im.INFLIGHT_FRAMES)})", "in flight"),)),
        Panel("Camera publish failures / s", (Target(
            f"sum by (line, camera) (rate({gm.METRIC_NAMES['publish_failures']}{SEL}[1m]))",
            "{{line}} {{camera}}"),), unit="fps"),
        Panel("Serve replicas", (Target(
            "sum by (deployment) (ray_serve_deployment_replica_healthy)", "{{deployment}}"),),
            description="Healthy replicas per Serve deployment (Ray Serve's own metric)."),
    ))
    return (throughput, latency, quality, health)


def all_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with the line variable matching everything."""
    out = []
    for row in line_dashboard_rows():
        for panel in row.panels:
            for t in panel.targets:
                out.append((panel.title, t.expr.replace(f"${LINE_VAR}", ".*")))
    return out


def build_dashboard(datasource_uid: str = "prometheus") -> dict[str, Any]:
    """The Grafana dashboard model (schema 39) as a plain JSON-able dict."""
    ds = {"type": "prometheus", "uid": datasource_uid}
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in line_dashboard_rows():
        panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        next_id += 1
        y += 1
        x = 0
        for p in row.panels:
            if x + p.width > 24:
                x, y = 0, y + p.height
            panels.append({
                "id": next_id, "type": p.kind, "title": p.title, "description": p.description,
                "datasource": ds, "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": ds, "expr": t.expr,
                     "legendFormat": t.legend}
                    for i, t in enumerate(p.targets)
                ],
            })
            next_id += 1
            x += p.width
        y += max((p.height for p in row.panels), default=0)
    return {
        "uid": DASHBOARD_UID, "title": DASHBOARD_TITLE, "tags": ["grdline"],
        "timezone": "utc", "schemaVersion": 39, "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{
            "name": LINE_VAR, "label": "Line", "type": "query", "datasource": ds,
            "query": f"label_values({_c(im.FRAMES_CONSUMED)}, line)", "refresh": 2,
            "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
        }]},
        "panels": panels,
    }
