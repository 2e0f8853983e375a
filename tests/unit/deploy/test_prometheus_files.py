"""(d) promtool (Debian's prometheus package) accepts the Prometheus config and rule files the
deployments use: compose's generated prometheus.yml and rules, the local stack's rendering, and
the rule groups of the k8s PrometheusRule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dashboards.alerts import render_alert_rules
from dashboards.prometheus import render_prometheus_config

from ._render import DEPLOY


def _promtool(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    assert path, "promtool not installed: Debian package prometheus (deploy/local/bootstrap.sh)"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("rules", ["compose", "k8s PrometheusRule", "local stack"])
def test_promtool_check_rules(tmp_path, rules):
    if rules == "compose":
        path = DEPLOY / "compose" / "prometheus" / "grdline-rules.yml"
    else:
        path = tmp_path / "rules.yml"
        if rules == "local stack":
            path.write_text(render_alert_rules())
        else:
            doc = yaml.safe_load((DEPLOY / "k8s" / "base" / "monitoring" / "prometheusrule.yaml").read_text())
            path.write_text(yaml.safe_dump(doc["spec"]))
    proc = _promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_promtool_check_compose_config(tmp_path):
    # The config names its rule file by the path inside the container; check it with that file placed
    # where the config says, in a copy (promtool resolves rule_files relative to the config).
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus" / "prometheus.yml").read_text())
    rules = tmp_path / Path(config["rule_files"][0]).name
    rules.write_text((DEPLOY / "compose" / "prometheus" / "grdline-rules.yml").read_text())
    config["rule_files"] = [rules.name]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = _promtool("check", "config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_local_stack_config(tmp_path):
    rules = tmp_path / "grdline-rules.yml"
    rules.write_text(render_alert_rules())
    path = tmp_path / "prometheus.yml"
    path.write_text(render_prometheus_config(rule_files=[str(rules)]))
    proc = _promtool("check", "config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
