"""Grafana dashboards as code, built with Grafana's own typed builders (grafana-foundation-sdk), so
the JSON follows Grafana's dashboard schema by construction.

Four dashboards (one home each: :data:`DASHBOARDS`):

* ``grdline-line`` — throughput, latency, defects and rejects, backpressure of the line;
* ``grdline-models`` — the model side per Serve application and per camera (shadow / roll-out);
* ``grdline-capacity`` — replicas, batch size, queues, in-flight frames and consumer lag;
* ``grdline-actuator`` — reject commands sent to the actuator topic.

Every query comes from :mod:`dashboards.promql`, which builds it from the metric names that
``inference.metrics`` and ``ingest.metrics`` define (never spelled here). The integration tests
run every panel's query against the real Prometheus after a short run. :func:`render` is
deterministic: regenerating gives the same bytes (tested), so the committed provisioning JSON
under ``dashboards/provisioning/json`` can be checked for being up to date.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, text, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import text as tm

from dashboards import promql as pq
from inference import metrics as im

#: Template variable holding the selected production lines (every dashboard has it).
LINE_VAR = "line"
SEL = f'{{line=~"${LINE_VAR}"}}'


def _stage(stage: str) -> str:
    return f'{{line=~"${LINE_VAR}",stage="{stage}"}}'

DEFAULT_DATASOURCE_UID = "prometheus"
DASHBOARD_UID = "grdline-line"  # the main dashboard (kept for callers of the single-dashboard API)
TAGS = ["grdline"]


@dataclass(frozen=True)
class Series:
    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    """One panel: a time series (default), a stat, or a text note (no query)."""

    title: str
    series: tuple[Series, ...] = ()
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # "timeseries" | "stat" | "text"
    span: int = 12
    height: int = 8


@dataclass(frozen=True)
class Section:
    title: str
    charts: tuple[Chart, ...]


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    sections: Callable[[], tuple[Section, ...]]


def _s(expr: str, legend: str) -> tuple[Series, ...]:
    return (Series(expr, legend),)


# --- the dashboards ----------------------------------------------------------------------------

def line_sections() -> tuple[Section, ...]:
    throughput = Section("Throughput", (
        Chart("Frames consumed / s", _s(pq.rate(im.FRAMES_CONSUMED, SEL), "{{line}}"), "fps",
              "Frames polled off the frames topic by the ingress."),
        Chart("Frames inspected / s", _s(pq.rate(im.FRAMES_INSPECTED, SEL), "{{line}}"), "fps",
              "Frames decided by GRD-Net in time."),
        Chart("Frames published by cameras / s",
              _s(pq.ingest_rate("frames_published", SEL), "{{line}}"), "fps",
              "Frames the camera processes got acknowledged by the broker."),
        Chart("Model batch size (mean)", _s(pq.frames_per_batch(), "mean batch"),
              description="Inspected frames per GRD-Net batch across model replicas (exact "
                          "counts; Ray's histogram _sum is approximate)."),
    ))
    latency = Section("Latency", (
        Chart("Capture → decision latency", (
            Series(pq.quantile(0.5, im.E2E_LATENCY, SEL), "p50 {{line}}"),
            Series(pq.quantile(0.99, im.E2E_LATENCY, SEL), "p99 {{line}}"),
        ), "s"),
        Chart("Per-stage latency p99",
              _s(pq.quantile(0.99, im.STAGE_LATENCY, SEL, by="stage"), "{{stage}}"), "s",
              "queue, decode, wait (batching), model and sinks."),
        Chart("Model batch latency", (
            Series(pq.quantile(0.5, im.MODEL_LATENCY, by=""), "p50"),
            Series(pq.quantile(0.99, im.MODEL_LATENCY, by=""), "p99"),
        ), "s"),
    ))
    quality = Section("Defects and rejects", (
        Chart("Defect rate", _s(pq.share(im.FRAMES_DEFECTIVE, im.FRAMES_INSPECTED, SEL), "{{line}}"),
              "percentunit"),
        Chart("Rejects / min", _s(f"60 * ({pq.rate_or_zero(im.ITEMS_REJECTED, SEL)})", "{{line}}"),
              description="Reject commands sent to the actuator topic (one per item)."),
        Chart("Late frames / s (deadline missed)", _s(pq.rate_or_zero(im.FRAMES_LATE, SEL), "{{line}}"),
              "fps"),
        Chart("Dead-lettered frames / s",
              _s(pq.rate_or_zero(im.FRAMES_DEAD_LETTERED, SEL, by="line, stage"), "{{line}} {{stage}}"),
              "fps"),
    ))
    health = Section("Backpressure and scaling", (
        Chart("Consumer lag (frames)", _s(pq.gauge(im.CONSUMER_LAG, by="topic"), "{{topic}}")),
        Chart("Frames in flight", _s(pq.gauge(im.INFLIGHT_FRAMES), "in flight")),
        Chart("Camera publish failures / s",
              _s(pq.ingest_rate_or_zero("publish_failures", SEL, by="line, camera"),
                 "{{line}} {{camera}}"),
              "fps"),
        Chart("Serve replicas", _s(f"sum by (deployment) ({pq.SERVE_REPLICAS_HEALTHY})",
                                   "{{deployment}}"),
              description="Healthy replicas per Serve deployment (Ray Serve's own metric)."),
    ))
    return (throughput, latency, quality, health)


_MODELS_NOTE = (
    "GRD-Line's own metrics are labelled by line and camera only (design: never by frame or "
    "item). Neither the recipe nor the model version is a label today, so this dashboard compares "
    "model versions by Serve application (a shadow or roll-out runs as its own application) and "
    "recipes by camera (each camera inspects one recipe). The per-recipe and per-model-version "
    "breakdown of decisions comes from the results in Redis: see `grdline report`. A `recipe` / "
    "`model_version` label on the grdline_ counters (inference.metrics) would put it here."
)


def models_sections() -> tuple[Section, ...]:
    by_app = "application, deployment"
    serve_sel = '{deployment!~".*Ingress.*"}'
    return (
        Section("Model versions (per Serve application)", (
            Chart("About this dashboard", kind="text", description=_MODELS_NOTE, span=24, height=4),
            Chart("Model requests / s",
                  _s(f"sum by ({by_app}) (rate({pq.SERVE_REQUESTS}{serve_sel}[1m]))",
                     "{{application}} {{deployment}}"), "reqps",
                  "Handle calls processed by each model deployment (one call carries a group of "
                  "frames of one camera)."),
            Chart("Model call latency p99",
                  _s(f"histogram_quantile(0.99, sum by (le, {by_app}) "
                     f"(rate({pq.SERVE_LATENCY_MS}_bucket{serve_sel}[1m])))",
                     "{{application}} {{deployment}}"), "ms",
                  "Ray Serve's processing latency of a model call, per application."),
        )),
        Section("Per camera (one recipe each)", (
            Chart("Defect rate per camera",
                  _s(pq.share(im.FRAMES_DEFECTIVE, im.FRAMES_INSPECTED, SEL, by="line, camera"),
                     "{{line}} {{camera}}"), "percentunit"),
            Chart("Capture → decision p99 per camera",
                  _s(pq.quantile(0.99, im.E2E_LATENCY, SEL, by="line, camera"),
                     "{{line}} {{camera}}"), "s"),
            Chart("Frames inspected / s per camera",
                  _s(pq.rate(im.FRAMES_INSPECTED, SEL, by="line, camera"), "{{line}} {{camera}}"),
                  "fps"),
            Chart("Late frames / s per camera",
                  _s(pq.rate_or_zero(im.FRAMES_LATE, SEL, by="line, camera"), "{{line}} {{camera}}"),
                  "fps"),
        )),
    )


def capacity_sections() -> tuple[Section, ...]:
    by_dep = "application, deployment"
    return (
        Section("Replicas", (
            Chart("Healthy replicas",
                  _s(f"sum by ({by_dep}) ({pq.SERVE_REPLICAS_HEALTHY})",
                     "{{application}} {{deployment}}"),
                  description="Ray Serve replicas per deployment (autoscaling moves the model's)."),
            Chart("Requests processing at replicas",
                  _s(f"sum by ({by_dep}) ({pq.SERVE_PROCESSING})", "{{application}} {{deployment}}"),
                  description="Handle calls a replica is running now (Ray Serve)."),
        )),
        Section("Batching and queues", (
            Chart("Model batch size", (
                Series(pq.frames_per_batch(), "mean (inspected frames / batches)"),
                Series(pq.quantile(0.95, im.BATCH_SIZE, by=""), "p95"),
            ), description="Frames per GRD-Net batch; near max_batch_size = the model is the "
                           "bottleneck."),
            Chart("Calls queued in the model handle",
                  _s(f"sum by ({by_dep}) ({pq.SERVE_QUEUED})", "{{application}} {{deployment}}"),
                  description="Calls waiting because every replica is at max_ongoing_requests."),
            Chart("Calls ongoing at replicas (router view)",
                  _s(f"sum by ({by_dep}) ({pq.SERVE_ONGOING})", "{{application}} {{deployment}}"),
                  description="What autoscaling reads (target_ongoing_requests per replica)."),
            Chart("Queue and wait latency p99", (
                Series(pq.quantile(0.99, im.STAGE_LATENCY, _stage("kafka"), by=""),
                       "kafka (queued in Kafka → polled)"),
                Series(pq.quantile(0.99, im.STAGE_LATENCY, _stage("wait"), by=""),
                       "wait (handle call → batch start)"),
                Series(pq.quantile(0.99, im.STAGE_LATENCY, _stage("commit"), by=""),
                       "commit (confirmed → offset committed)"),
            ), "s"),
        )),
        Section("Backlog", (
            Chart("Consumer lag per partition",
                  _s(pq.gauge(im.CONSUMER_LAG, by="topic, partition"), "{{topic}}/{{partition}}"),
                  description="Frames behind the partition end: grows when inference falls behind."),
            Chart("Frames in flight (all ingress replicas)",
                  _s(pq.gauge(im.INFLIGHT_FRAMES), "in flight"),
                  description="Polled and not yet committed; bounded by the in-flight window."),
        )),
    )


_ACTUATOR_NOTE = (
    "There is no actuator process in GRD-Line yet, so there are no actuator-side metrics "
    "(commands received, executed, de-duplicated by the actuator). What exists is the sending "
    "side: `grdline_items_rejected` counts reject commands the inference sinks got acknowledged "
    "by the broker, one per item. Commands the reject claim de-duplicated (a second defective "
    "frame of an item, a redelivery) are not counted by any metric; the gap between defective "
    "frames and commands below shows them only approximately (late fail-safe rejects also count "
    "as commands)."
)


def actuator_sections() -> tuple[Section, ...]:
    return (
        Section("Reject commands (rejects topic)", (
            Chart("About this dashboard", kind="text", description=_ACTUATOR_NOTE, span=24,
                  height=4),
            Chart("Reject commands sent (range)", _s(pq.increase(im.ITEMS_REJECTED, SEL), "sent"),
                  kind="stat", span=6, height=6,
                  description="Commands acknowledged by the broker over the dashboard's range."),
            Chart("Late frames (range)", _s(pq.increase(im.FRAMES_LATE, SEL), "late"),
                  kind="stat", span=6, height=6,
                  description="Frames past their deadline; the late policy may reject them."),
            Chart("Reject commands / min per camera",
                  _s(f"60 * ({pq.rate_or_zero(im.ITEMS_REJECTED, SEL, by='line, camera')})",
                     "{{line}} {{camera}}"), span=12, height=6),
            Chart("Defective frames vs reject commands / s", (
                Series(pq.rate_or_zero(im.FRAMES_DEFECTIVE, SEL), "defective frames {{line}}"),
                Series(pq.rate_or_zero(im.ITEMS_REJECTED, SEL), "reject commands {{line}}"),
            ), "fps", "Several frames of one item (cameras, redeliveries) make one command.",
                span=24),
        )),
    )


DASHBOARDS: tuple[DashboardSpec, ...] = (
    DashboardSpec("grdline-line", "GRD-Line: inspection line",
                  "Throughput, latency, defects and backpressure of the line.", line_sections),
    DashboardSpec("grdline-models", "GRD-Line: model versions and recipes",
                  "The model side per Serve application (shadow, roll-out) and per camera.",
                  models_sections),
    DashboardSpec("grdline-capacity", "GRD-Line: capacity",
                  "Replicas, batch size, queues, in-flight frames and consumer lag.",
                  capacity_sections),
    DashboardSpec("grdline-actuator", "GRD-Line: reject actuator",
                  "Reject commands sent to the actuator topic.", actuator_sections),
)
SPEC_BY_UID = {d.uid: d for d in DASHBOARDS}


# --- building with the SDK ---------------------------------------------------------------------

def _datasource(uid: str) -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val="prometheus", uid=uid)


def _panel(chart: Chart, panel_id: int, ds: dm.DataSourceRef) -> Any:
    if chart.kind == "text":
        return (text.Panel().id(panel_id).title(chart.title).span(chart.span).height(chart.height)
                .mode(tm.TextMode.MARKDOWN).content(chart.description))
    if chart.kind == "stat":
        p = (stat.Panel()
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .graph_mode(cm.BigValueGraphMode.NONE)
             .color_mode(cm.BigValueColorMode.VALUE)
             .text_mode(cm.BigValueTextMode.AUTO)
             .justify_mode(cm.BigValueJustifyMode.AUTO)
             .orientation(cm.VizOrientation.AUTO))
    else:
        p = (timeseries.Panel()
             .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI)
                      .sort(cm.SortOrder.NONE))
             .fill_opacity(10).line_width(1))
    p = (p.id(panel_id).title(chart.title).description(chart.description).unit(chart.unit)
         .span(chart.span).height(chart.height).datasource(ds))
    for i, s in enumerate(chart.series):
        q = Dataquery().ref_id(chr(ord("A") + i)).datasource(ds).expr(s.expr).legend_format(s.legend)
        p = p.with_target(q.instant() if chart.kind == "stat" else q.range())
    return p


def build(uid: str = DASHBOARD_UID, datasource_uid: str = DEFAULT_DATASOURCE_UID) -> db.Dashboard:
    """The SDK builder of one dashboard (``.build()`` gives the typed model)."""
    spec = SPEC_BY_UID[uid]
    ds = _datasource(datasource_uid)
    d = (db.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(TAGS)
         .timezone("utc").refresh("10s").time("now-30m", "now").editable()
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .with_variable(
             db.QueryVariable(LINE_VAR).label("Line").datasource(ds)
             .query(f"label_values({pq.name(im.FRAMES_CONSUMED)}, line)")
             .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
             .multi(True).include_all(True).all_value(".*")
             .current(dm.VariableOption(selected=True, text="All", value="$__all"))))
    next_id = 1
    for section in spec.sections():
        d = d.with_row(db.Row(section.title).id(next_id))
        next_id += 1
        for chart in section.charts:
            d = d.with_panel(_panel(chart, next_id, ds))
            next_id += 1
    return d


def build_dashboard(datasource_uid: str = DEFAULT_DATASOURCE_UID,
                    uid: str = DASHBOARD_UID) -> dict[str, Any]:
    """One dashboard as a plain JSON-able dict (what Grafana's HTTP API and provisioning take)."""
    return json.loads(render(uid, datasource_uid))


def render(uid: str = DASHBOARD_UID, datasource_uid: str = DEFAULT_DATASOURCE_UID) -> str:
    """The dashboard JSON text: sorted keys, two-space indent, trailing newline (byte-stable)."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build(uid, datasource_uid).build()) + "\n"


def iter_targets(model: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of a dashboard model, rows' nested panels included."""
    for panel in model.get("panels", []):
        for nested in panel.get("panels", []) or []:
            for t in nested.get("targets", []) or []:
                yield nested["title"], t["expr"]
        for t in panel.get("targets", []) or []:
            yield panel["title"], t["expr"]


def all_queries(uids: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(``uid: panel title``, PromQL) of every target of every dashboard, read back from the built
    JSON, with the line variable matching everything (runnable on Prometheus as is)."""
    out = []
    for uid in uids or tuple(SPEC_BY_UID):
        for title, expr in iter_targets(build_dashboard(uid=uid)):
            out.append((f"{uid}: {title}",
                        expr.replace(f"${LINE_VAR}", ".*").replace("$__range", "1h")))
    return out
