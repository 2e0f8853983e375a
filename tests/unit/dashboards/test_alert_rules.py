"""The alert rules under Prometheus' own rule unit-test engine (`promtool test rules`): every
rule fires on its fault and stays silent on a healthy series, on the freshly rendered rules and on
the rule files the deployments ship (compose, the Kubernetes PrometheusRule)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dashboards import alert_tests as at
from dashboards import promql as pq
from dashboards.alerts import alert_rules, render_alert_rules

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    assert path, "promtool not installed: Debian package prometheus (deploy/local/bootstrap.sh)"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _rule_file(source: str, tmp_path: Path) -> str:
    path = tmp_path / "rules.yml"
    if source == "rendered":
        path.write_text(render_alert_rules())
    elif source == "compose":
        path.write_text((DEPLOY / "compose" / "prometheus" / "grdline-rules.yml").read_text())
    else:
        doc = yaml.safe_load((DEPLOY / "k8s" / "base" / "monitoring" / "prometheusrule.yaml").read_text())
        path.write_text(yaml.safe_dump(doc["spec"]))
    return path.name


@pytest.mark.parametrize("source", ["rendered", "compose", "k8s PrometheusRule"])
def test_promtool_unit_tests_pass(tmp_path, source):
    rules = _rule_file(source, tmp_path)
    check = _promtool("check", "rules", rules, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    (tmp_path / "rules_test.yml").write_text(at.render_promtool_tests(rules))
    proc = _promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_rule_has_a_case_that_fires_and_one_that_does_not():
    names = {r["alert"] for r in alert_rules()["groups"][0]["rules"]}
    assert names - at.NOT_COVERED == set(at.CASES), "a rule without a promtool case (dashboards/alert_tests.py)"
    for alert, make in at.CASES.items():
        cases = make()
        fired = [t for c in cases for t in c["alert_rule_test"] if t["exp_alerts"]]
        assert fired, f"{alert}: no case where it fires"
        assert all(t["alertname"] == alert for c in cases for t in c["alert_rule_test"])
        # a healthy series that must not fire: a case with more series than expected alerts
        healthy = [c for c in cases for t in c["alert_rule_test"] if len(c["input_series"]) > len(t["exp_alerts"])]
        assert healthy, f"{alert}: no case with a healthy series"


def test_a_wrong_expectation_fails_promtool(tmp_path):
    """The harness can fail: a case that expects no alert where one fires is reported by promtool."""
    (tmp_path / "rules.yml").write_text(render_alert_rules())
    doc = at.promtool_tests("rules.yml")
    doc["tests"] = [c for c in doc["tests"] if c["alert_rule_test"][0]["exp_alerts"]][:1]
    doc["tests"][0]["alert_rule_test"][0]["exp_alerts"] = []
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(doc))
    proc = _promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert proc.returncode != 0


def test_short_windows_keep_the_production_expressions():
    """What the integration tests load differs only in windows and `for:`."""
    prod = {r["alert"]: r for r in alert_rules()["groups"][0]["rules"]}
    short = {r["alert"]: r for r in alert_rules(rate_window="30s", quiet_window="20s", hold="5s")["groups"][0]["rules"]}
    for name, rule in prod.items():
        assert short[name]["for"] == "5s"
        assert short[name]["expr"].replace("[30s]", "[5m]").replace("[20s]", "[2m]") == rule["expr"], name


def test_serve_running_status_is_rays():
    from ray.serve.schema import ApplicationStatus

    assert ApplicationStatus.RUNNING.to_numeric() == pq.SERVE_APP_RUNNING
