"""Dashboards and alert rules as code: well-formed, and built only from metric names the code emits."""

from __future__ import annotations

import json
import re

import yaml

from dashboards.alerts import alert_rules, render_alert_rules
from dashboards.grafana import all_queries, build_dashboard
from inference import metrics as im
from ingest import metrics as gm

KNOWN = (
    {s for n in im.SPEC_BY_NAME for s in im.prometheus_series(n)}
    | {im.prometheus_name(n) for n in im.SPEC_BY_NAME}
    | {v for v in gm.METRIC_NAMES.values()}
    | {v + "_bucket" for v in gm.METRIC_NAMES.values()}
)
PROMQL_WORDS = {
    "sum", "by", "rate", "histogram_quantile", "clamp_min", "le", "line", "camera", "stage",
    "topic", "deployment", "label_values", "max", "avg",
}


def _metric_names(expr: str) -> set[str]:
    no_strings = re.sub(r'"[^"]*"', "", expr)
    no_labels = re.sub(r"\{[^}]*\}", "", no_strings)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_labels)
    return {w for w in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", no_ranges) if w not in PROMQL_WORDS}


def test_every_query_uses_only_metrics_the_code_defines():
    queries = all_queries()
    assert len(queries) >= 12
    for title, expr in queries:
        names = _metric_names(expr) - {"e"}  # 1e-9 literal
        unknown = {n for n in names if n not in KNOWN and not n.startswith("ray_serve_")}
        assert not unknown, f"panel {title!r} queries undefined metrics {unknown}: {expr}"


def test_dashboard_covers_throughput_latency_and_defects():
    model = build_dashboard()
    json.dumps(model)  # JSON-able
    panels = [p for p in model["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("inspected", "latency", "defect rate", "rejects", "late", "dead-letter", "lag"):
        assert word in titles, word
    for p in panels:
        assert p["targets"] and all(t["expr"] for t in p["targets"])
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
    assert model["templating"]["list"][0]["name"] == "line"


def test_alert_rules_reference_defined_metrics():
    rules = alert_rules()["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"GrdlineFramesLate", "GrdlineConsumerLag"}
    for r in rules:
        unknown = {n for n in _metric_names(r["expr"]) - {"e"} if n not in KNOWN}
        assert not unknown, (r["alert"], unknown)
    assert yaml.safe_load(render_alert_rules(defect_rate_max=0.5))["groups"][0]["rules"][0][
        "expr"
    ].endswith("> 0.5")
