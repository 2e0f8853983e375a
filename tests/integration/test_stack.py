"""The local stack answers: `grdline stack status`, Redis round trip, Prometheus scraping itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request


def test_status_reports_every_service_up(stack):
    out = subprocess.run(
        [sys.executable, "-m", "inference.cli", "stack", "status"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[1:]}
    assert rows == {"kafka": "up", "redis": "up", "prometheus": "up"}
    assert f"Apache Kafka {stack.kafka_version()}" in out.stdout
    assert stack.kafka_version().startswith("4.")


def test_up_is_idempotent(stack):
    assert stack.up() == []  # everything already up: nothing started twice


def test_redis_round_trip(redis_client, redis_prefix):
    redis_client.set(f"{redis_prefix}:k", b"v", ex=60)
    assert redis_client.get(f"{redis_prefix}:k") == b"v"


def test_prometheus_scrapes_itself(prometheus_url):
    query = urllib.parse.urlencode({"query": 'up{job="prometheus"}'})
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=5) as r:
            result = json.load(r)["data"]["result"]
        if result and result[0]["value"][1] == "1":
            return
        assert time.monotonic() < deadline, f"prometheus never scraped itself: {result}"
        time.sleep(0.5)
