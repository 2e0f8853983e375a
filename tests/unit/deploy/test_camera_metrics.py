"""The camera's /metrics can be scraped where it runs: its listen address is a setting (loopback by
default, for the local stack), compose and Kubernetes open it to the pod/container network, and
their Prometheus configuration scrapes it (else GrdlineCameraPublishFailing reads nothing)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from ingest.settings import INGEST_METRICS_PORT, IngestMetricsSettings

from ._render import DEPLOY, load_render


def test_metrics_host_defaults_to_loopback_and_reads_the_environment(monkeypatch):
    assert str(IngestMetricsSettings().host) == "127.0.0.1"
    monkeypatch.setenv("GRDLINE_INGEST_METRICS_HOST", "0.0.0.0")
    assert str(IngestMetricsSettings().host) == "0.0.0.0"


def test_a_wrong_metrics_host_fails_naming_the_field(monkeypatch):
    monkeypatch.setenv("GRDLINE_INGEST_METRICS_HOST", "camera.local")
    with pytest.raises(ValidationError, match="host"):
        IngestMetricsSettings()


def test_compose_camera_listens_on_all_interfaces_and_is_scraped():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    render = load_render()
    camera = compose["services"][render.COMPOSE_CAMERA]
    assert camera["environment"]["GRDLINE_INGEST_METRICS_HOST"] == "0.0.0.0"
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert f"{render.COMPOSE_CAMERA}:{INGEST_METRICS_PORT}" in targets


def test_k8s_camera_listens_on_all_interfaces_and_is_scraped():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "base" / "camera" / "camera.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["GRDLINE_INGEST_METRICS_HOST"] == "0.0.0.0"
    assert {"name": "metrics", "containerPort": INGEST_METRICS_PORT} in container["ports"]
    monitor = yaml.safe_load((DEPLOY / "k8s" / "base" / "monitoring" / "servicemonitor.yaml").read_text())
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
