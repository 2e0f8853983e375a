"""Grafana provisioning files: the Prometheus datasource, the dashboard provider, the dashboards.

Written to ``dashboards/provisioning/`` (committed; ``grdline dashboards export`` regenerates it and
a unit test checks the committed files are what the code generates, byte for byte):

* ``datasources/grdline.yaml`` — mount at ``/etc/grafana/provisioning/datasources/``; the
  Prometheus URL comes from Grafana's environment, ``GRDLINE_PROMETHEUS_URL`` (the same variable
  ``PrometheusSettings`` reads), e.g. ``http://prometheus:9090`` in compose or Kubernetes;
* ``dashboards/grdline.yaml`` — mount at ``/etc/grafana/provisioning/dashboards/``; a file
  provider reading :data:`GRAFANA_DASHBOARDS_PATH`;
* ``json/<uid>.json`` — one file per dashboard; mount (or copy into a ConfigMap) at
  :data:`GRAFANA_DASHBOARDS_PATH`. Grafana's file provider walks sub-folders and reads only
  ``*.json``, so mounting a whole exported folder there works as well.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dashboards.grafana import DASHBOARDS, DEFAULT_DATASOURCE_UID, render
from dashboards.settings import GrafanaSettings

PROVISIONING_DIR = Path(__file__).resolve().parent / "provisioning"
#: Where Grafana reads the dashboard JSON (inside the Grafana container / pod).
GRAFANA_DASHBOARDS_PATH = "/var/lib/grafana/dashboards"
#: Environment variable of the Grafana process holding the Prometheus URL.
PROMETHEUS_URL_ENV = "GRDLINE_PROMETHEUS_URL"


def datasource_yaml(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> str:
    config = {
        "apiVersion": 1,
        "datasources": [{
            "name": "Prometheus",
            "uid": datasource_uid,
            "type": "prometheus",
            "access": "proxy",
            "url": f"${{{PROMETHEUS_URL_ENV}}}",
            "isDefault": True,
            "editable": False,
            # the local stack scrapes every 2 s; rate windows in the panels are 1m
            "jsonData": {"timeInterval": "2s", "httpMethod": "POST"},
        }],
    }
    return yaml.safe_dump(config, sort_keys=False)


def provider_yaml() -> str:
    config = {
        "apiVersion": 1,
        "providers": [{
            "name": "grdline",
            "orgId": 1,
            "folder": GrafanaSettings.model_fields["folder"].default,
            "type": "file",
            "disableDeletion": False,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 30,
            "options": {"path": GRAFANA_DASHBOARDS_PATH, "foldersFromFilesStructure": False},
        }],
    }
    return yaml.safe_dump(config, sort_keys=False)


def provisioning_files(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dict[str, str]:
    """Relative path -> text of every provisioning file."""
    files = {
        "datasources/grdline.yaml": datasource_yaml(datasource_uid),
        "dashboards/grdline.yaml": provider_yaml(),
    }
    for d in DASHBOARDS:
        files[f"json/{d.uid}.json"] = render(d.uid, datasource_uid)
    return files


def write_provisioning(out: Path = PROVISIONING_DIR,
                       datasource_uid: str = DEFAULT_DATASOURCE_UID) -> list[Path]:
    """Write every provisioning file under ``out``; returns the paths written."""
    written = []
    for rel, content in provisioning_files(datasource_uid).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
