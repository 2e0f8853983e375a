"""Publish the dashboards to Grafana through its HTTP API (grafana-client).

The token comes from ``GRDLINE_GRAFANA_TOKEN`` (``GrafanaSettings``), never from a file in the
repo or a command-line argument, and is never logged. For Grafana instances that read files
instead (compose, Kubernetes), see :mod:`dashboards.provision`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dashboards.grafana import (
    DASHBOARD_UID,
    DASHBOARDS,
    DEFAULT_DATASOURCE_UID,
    build_dashboard,
    render,
)
from dashboards.settings import GrafanaSettings


class PublishError(RuntimeError):
    """Grafana refused or could not be reached; the message names the URL and dashboard."""


def export_dashboard(out: Path, datasource_uid: str = DEFAULT_DATASOURCE_UID,
                     uid: str = DASHBOARD_UID) -> Path:
    """Write one dashboard's JSON to ``out`` (a manual import, a ConfigMap); the whole
    provisioning set is :func:`dashboards.provision.write_provisioning`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(uid, datasource_uid))
    return out


def publish_dashboards(
    settings: GrafanaSettings | None = None, datasource_uid: str = DEFAULT_DATASOURCE_UID,
    uids: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Create or overwrite every dashboard (or ``uids``) in ``settings.folder``; returns Grafana's
    answers in order."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    settings = settings or GrafanaSettings()
    credential = settings.token.get_secret_value() if settings.token else None
    api = GrafanaApi.from_url(settings.url, credential=credential)
    answers = []
    uid = "?"
    try:
        folder_uid = _ensure_folder(api, settings.folder)
        for uid in uids or tuple(d.uid for d in DASHBOARDS):
            answers.append(api.dashboard.update_dashboard({
                "dashboard": build_dashboard(datasource_uid, uid=uid),
                "folderUid": folder_uid,
                "overwrite": True,
                "message": "published by grdline dashboards publish",
            }))
    except (GrafanaException, OSError) as exc:
        raise PublishError(f"publishing dashboard {uid!r} to {settings.url} failed: {exc}") from exc
    return answers


def _ensure_folder(api: Any, title: str) -> str:
    for folder in api.folder.get_all_folders():
        if folder.get("title") == title:
            return folder["uid"]
    return api.folder.create_folder(title)["uid"]
