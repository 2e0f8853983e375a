"""Prometheus and Grafana settings; defaults point at the local stack on loopback."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Local stack ports (deploy/local).
PROMETHEUS_PORT = 19090


class PrometheusSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRDLINE_PROMETHEUS_", extra="forbid")

    url: str = f"http://127.0.0.1:{PROMETHEUS_PORT}"


class GrafanaSettings(BaseSettings):
    """Grafana HTTP API; the token comes only from the environment (GRDLINE_GRAFANA_TOKEN)."""

    model_config = SettingsConfigDict(env_prefix="GRDLINE_GRAFANA_", extra="forbid")

    url: str = "http://127.0.0.1:3000"
    token: SecretStr | None = None
    folder: str = "GRD-Line"
