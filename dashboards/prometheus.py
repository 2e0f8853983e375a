"""Prometheus scrape configuration as code: which endpoints carry GRD-Line's metrics.

One Ray metrics endpoint per node covers every Serve replica on it (``ray.util.metrics``); ingest
processes (cameras, replay) serve their own ``/metrics``. The local stack writes this config;
a cluster deployment renders it with its own targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from dashboards.settings import PROMETHEUS_PORT
from inference.settings import RAY_METRICS_PORT
from ingest.settings import INGEST_METRICS_PORT

#: Scrape interval of the local stack: short, so tests and the demo see metrics within seconds.
LOCAL_SCRAPE_INTERVAL_S = 2


def render_prometheus_config(
    ray_targets: Sequence[str] = (f"127.0.0.1:{RAY_METRICS_PORT}",),
    ingest_targets: Sequence[str] = (f"127.0.0.1:{INGEST_METRICS_PORT}",),
    scrape_interval_s: int = LOCAL_SCRAPE_INTERVAL_S,
    rule_files: Sequence[str] = (),
) -> str:
    """The ``prometheus.yml`` text for the given targets (and alert rule files)."""
    interval = f"{scrape_interval_s}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": "ray", "static_configs": [{"targets": list(ray_targets)}]},
            {"job_name": "grdline-ingest", "static_configs": [{"targets": list(ingest_targets)}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{PROMETHEUS_PORT}"]}]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)
