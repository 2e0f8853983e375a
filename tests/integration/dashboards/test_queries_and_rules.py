"""Every panel query and alert rule is valid PromQL on the real Prometheus, which loaded the rules;
every panel shows data after a short real run (test_report.py shares that run); publishing speaks
Grafana's HTTP API (to a loopback stand-in, since Grafana cannot run here)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

from pydantic import SecretStr

from dashboards import promql as pq
from dashboards.alerts import RULE_GROUP, alert_rules
from dashboards.grafana import DASHBOARDS, all_queries
from dashboards.publish import publish_dashboards
from dashboards.settings import GrafanaSettings
from ingest import metrics as ingest_metrics


def _query(prometheus_url: str, expr: str) -> dict:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:  # 400 carries Prometheus' parse error
        return json.load(exc)


def test_every_panel_query_parses_on_prometheus(prometheus_url):
    for title, expr in all_queries():
        answer = _query(prometheus_url, expr)
        assert answer["status"] == "success", f"{title}: {answer.get('error')} in {expr}"


def test_prometheus_loaded_the_alert_rules(prometheus_url):
    for rule in alert_rules()["groups"][0]["rules"]:
        assert _query(prometheus_url, rule["expr"])["status"] == "success", rule["alert"]
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/rules", timeout=10) as r:
            groups = json.load(r)["data"]["groups"]
        names = {rule["name"] for g in groups if g["name"] == RULE_GROUP for rule in g["rules"]}
        if names:
            assert names == {r["alert"] for r in alert_rules()["groups"][0]["rules"]}
            return
        assert time.monotonic() < deadline, "Prometheus did not load the grdline rule group"
        time.sleep(0.5)


class _FakeGrafana(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict | None, str | None]] = []

    def _reply(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path, None, self.headers.get("Authorization")))
        self._reply([] if self.path.startswith("/api/folders") else {})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST", self.path, body, self.headers.get("Authorization")))
        if self.path.startswith("/api/folders"):
            self._reply({"uid": "f-1", "title": body["title"]})
        else:
            self._reply({"status": "success", "uid": body["dashboard"]["uid"], "url": "/d/x"})

    def log_message(self, *args: object) -> None:
        pass


def test_publish_posts_the_dashboard_with_the_token():
    server = HTTPServer(("127.0.0.1", 0), _FakeGrafana)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = GrafanaSettings(url=f"http://127.0.0.1:{server.server_port}",
                                   token=SecretStr("s3cret"), folder="Line 1")
        assert "s3cret" not in repr(settings)
        answers = publish_dashboards(settings)
    finally:
        server.shutdown()
    uids = [d.uid for d in DASHBOARDS]
    assert [a["uid"] for a in answers] == uids
    posts = [s for s in _FakeGrafana.seen if s[0] == "POST"]
    assert posts[0][1] == "/api/folders" and posts[0][2]["title"] == "Line 1"
    dashes = [s for s in posts if s[1] == "/api/dashboards/db"]
    assert [d[2]["dashboard"]["uid"] for d in dashes] == uids
    assert all(d[2]["folderUid"] == "f-1" and d[2]["overwrite"] is True for d in dashes)
    assert all(s[3] == "Bearer s3cret" for s in _FakeGrafana.seen)


#: Series the dashboards name that a healthy short run does not produce (and why).
ABSENT_IN_A_HEALTHY_RUN = {
    ingest_metrics.METRIC_NAMES["publish_failures"]: "no publish fails (the panel shows 0 via `or`)",
}


def _names_in(expr: str) -> set[str]:
    import re

    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', "", expr)
    return set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", bare)) & pq.KNOWN_SERIES


def test_every_panel_shows_data_after_a_short_run(short_run, prometheus_url):
    """Every query of every dashboard returns series for the run's line, and every series a
    dashboard names reached Prometheus (a renamed metric cannot hide behind an `or 0`)."""
    line_only = [(t, q.replace('line=~".*"', f'line=~"{short_run.line}"')) for t, q in all_queries()]
    empty = []
    for title, expr in line_only:
        answer = _query(prometheus_url, expr)
        assert answer["status"] == "success", f"{title}: {answer.get('error')} in {expr}"
        if not answer["data"]["result"]:
            empty.append((title, expr))
    assert not empty, f"panels without data after a real run: {empty}"
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/label/__name__/values", timeout=10) as r:
        present = set(json.load(r)["data"])
    named = set().union(*(_names_in(q) for _, q in all_queries()))
    missing = named - present - set(ABSENT_IN_A_HEALTHY_RUN)
    assert not missing, f"series the dashboards query that Prometheus never saw: {missing}"
