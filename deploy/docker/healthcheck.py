"""Container health check (Dockerfile HEALTHCHECK): exit 0 when this container's role is healthy.

``GRDLINE_ROLE``: ``ray-head`` (the Ray GCS answers and the Serve application is RUNNING),
``ray-worker`` (the Ray GCS at ``RAY_ADDRESS`` answers), ``camera`` (its ``/metrics`` answers),
``none`` (always healthy). Standard library only; every probe has a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

TIMEOUT_S = 8


def _ray_gcs(address: str) -> bool:
    proc = subprocess.run(["ray", "health-check", "--address", address],
                          capture_output=True, timeout=TIMEOUT_S)
    return proc.returncode == 0


def _get(url: str) -> bytes:
    token = os.environ.get("RAY_AUTH_TOKEN")  # Ray's token authentication, when the node uses it
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as r:
        return r.read()


def _serve_running(app: str) -> bool:
    data = json.loads(_get("http://127.0.0.1:8265/api/serve/applications/"))
    return data.get("applications", {}).get(app, {}).get("status") == "RUNNING"


def check(role: str) -> bool:
    if role == "ray-head":
        return _ray_gcs("127.0.0.1:6379") and _serve_running(os.environ.get("GRDLINE_APP", "grdline"))
    if role == "ray-worker":
        return _ray_gcs(os.environ.get("RAY_ADDRESS", "ray-head:6379"))
    if role == "camera":
        port = os.environ.get("GRDLINE_INGEST_METRICS_PORT", "18081")
        return b"grdline_" in _get(f"http://127.0.0.1:{port}/metrics")
    return True


if __name__ == "__main__":
    role = os.environ.get("GRDLINE_ROLE", "none")
    try:
        ok = check(role)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        print(f"unhealthy ({role}): {exc}")
        sys.exit(1)
    print(f"{'healthy' if ok else 'unhealthy'} ({role})")
    sys.exit(0 if ok else 1)
