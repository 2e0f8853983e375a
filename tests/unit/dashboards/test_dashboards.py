"""Dashboards and alert rules as code: Grafana's schema (the SDK's typed model), only metric names
the code emits, byte-stable provisioning files that match what is committed."""

from __future__ import annotations

import json
import re

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import promql as pq
from dashboards.alerts import alert_rules, render_alert_rules
from dashboards.grafana import (
    DASHBOARDS,
    DEFAULT_DATASOURCE_UID,
    all_queries,
    build_dashboard,
    iter_targets,
    render,
)
from dashboards.provision import (
    GRAFANA_DASHBOARDS_PATH,
    PROMETHEUS_URL_ENV,
    PROVISIONING_DIR,
    provisioning_files,
)

PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "clamp_min", "le", "line", "camera",
    "stage", "topic", "partition", "deployment", "application", "label_values", "max", "avg",
    "or", "vector", "unless", "on", "group_left", "absent", "reason",
}


def _metric_names(expr: str) -> set[str]:
    no_strings = re.sub(r'"[^"]*"', "", expr)
    no_labels = re.sub(r"\{[^}]*\}", "", no_strings)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_labels)
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", no_ranges))
    return words - PROMQL_WORDS - {"e"}  # the 1e-9 literal


def test_every_query_uses_only_metrics_the_code_defines():
    queries = all_queries()
    assert len(queries) >= 30
    for title, expr in queries:
        unknown = _metric_names(expr) - pq.KNOWN_SERIES
        assert not unknown, f"panel {title!r} queries undefined metrics {unknown}: {expr}"


def test_dashboards_follow_grafanas_schema_and_round_trip_through_the_sdk():
    register_default_plugins()
    for spec in DASHBOARDS:
        text = render(spec.uid)
        typed = Dashboard.from_json(json.loads(text))
        assert JSONEncoder(sort_keys=True, indent=2).encode(typed) + "\n" == text, spec.uid


def test_dashboards_are_byte_stable_and_the_committed_files_are_current():
    first = provisioning_files()
    assert first == provisioning_files()
    assert {f"json/{d.uid}.json" for d in DASHBOARDS} <= set(first)
    stale = [rel for rel, text in first.items()
             if not (PROVISIONING_DIR / rel).exists() or (PROVISIONING_DIR / rel).read_bytes()
             != text.encode()]
    assert not stale, f"regenerate with `grdline dashboards export`: {stale}"


def test_line_dashboard_covers_throughput_latency_and_defects():
    model = build_dashboard()
    panels = [p for p in model["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("inspected", "latency", "defect rate", "rejects", "late", "dead-letter", "lag"):
        assert word in titles, word
    assert model["templating"]["list"][0]["name"] == "line"


def test_every_dashboard_is_well_formed():
    uids = set()
    for spec in DASHBOARDS:
        model = build_dashboard(uid=spec.uid)
        uids.add(model["uid"])
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)) and 0 not in ids, spec.uid
        for p in model["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (spec.uid, p["title"])
            if p["type"] in ("timeseries", "stat"):
                assert p["datasource"]["uid"] == DEFAULT_DATASOURCE_UID
                refs = [t["refId"] for t in p["targets"]]
                assert refs and len(refs) == len(set(refs)) and all(refs), (spec.uid, p["title"])
                assert all(t["expr"] for t in p["targets"])
        assert list(iter_targets(model)), spec.uid
    assert uids == {"grdline-line", "grdline-models", "grdline-capacity", "grdline-actuator"}


def test_capacity_and_actuator_dashboards_show_what_exists_and_say_what_does_not():
    capacity = json.dumps(build_dashboard(uid="grdline-capacity"))
    for series in (pq.SERVE_REPLICAS_HEALTHY, pq.SERVE_QUEUED, pq.name("grdline_batch_size"),
                   pq.name("grdline_consumer_lag")):
        assert series in capacity
    actuator = build_dashboard(uid="grdline-actuator")
    notes = [p for p in actuator["panels"] if p["type"] == "text"]
    assert notes and "no actuator" in notes[0]["options"]["content"].lower()
    assert any(pq.name("grdline_items_rejected") in e for _, e in iter_targets(actuator))


def test_provisioning_points_grafana_at_the_dashboards_and_prometheus():
    files = provisioning_files()
    ds = yaml.safe_load(files["datasources/grdline.yaml"])["datasources"][0]
    assert ds["uid"] == DEFAULT_DATASOURCE_UID and ds["type"] == "prometheus"
    assert ds["url"] == f"${{{PROMETHEUS_URL_ENV}}}"
    provider = yaml.safe_load(files["dashboards/grdline.yaml"])["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == GRAFANA_DASHBOARDS_PATH


def test_alert_rules_reference_defined_metrics():
    rules = alert_rules()["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"GrdlineFramesLate", "GrdlineConsumerLag"}
    for r in rules:
        unknown = _metric_names(r["expr"]) - pq.KNOWN_SERIES
        assert not unknown, (r["alert"], unknown)
    assert yaml.safe_load(render_alert_rules(defect_rate_max=0.5))["groups"][0]["rules"][0][
        "expr"
    ].endswith("> 0.5")
