"""Publish the dashboards to Grafana through its HTTP API (grafana-client).

The token comes from ``GRDLINE_GRAFANA_TOKEN`` (``GrafanaSettings``), never from a file in the
repo or a command-line argument, and is never logged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dashboards.grafana import DASHBOARD_UID, build_dashboard
from dashboards.settings import GrafanaSettings


class PublishError(RuntimeError):
    """Grafana refused or could not be reached; the message names the URL and dashboard."""


def export_dashboard(out: Path, datasource_uid: str = "prometheus") -> Path:
    """Write the dashboard JSON to ``out`` (for provisioning or a manual import)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(build_dashboard(datasource_uid), indent=2) + "\n")
    return out


def publish_dashboard(
    settings: GrafanaSettings | None = None, datasource_uid: str = "prometheus"
) -> dict[str, Any]:
    """Create or overwrite the line dashboard in ``settings.folder``; returns Grafana's answer."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    settings = settings or GrafanaSettings()
    credential = settings.token.get_secret_value() if settings.token else None
    api = GrafanaApi.from_url(settings.url, credential=credential)
    try:
        folder_uid = _ensure_folder(api, settings.folder)
        return api.dashboard.update_dashboard({
            "dashboard": build_dashboard(datasource_uid),
            "folderUid": folder_uid,
            "overwrite": True,
            "message": "published by grdline dashboards publish",
        })
    except (GrafanaException, OSError) as exc:
        raise PublishError(
            f"publishing dashboard {DASHBOARD_UID!r} to {settings.url} failed: {exc}"
        ) from exc


def _ensure_folder(api: Any, title: str) -> str:
    for folder in api.folder.get_all_folders():
        if folder.get("title") == title:
            return folder["uid"]
    return api.folder.create_folder(title)["uid"]
