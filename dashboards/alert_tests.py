"""``promtool test rules`` cases for the alert rules, built from the same names as the rules.

Each case feeds Prometheus' rule unit-test engine a bad series and a healthy one and says which
alerts must fire (labels and the expanded summary) — so a case fails both when an alert does not
fire on the fault and when it fires on the healthy series. :func:`render_promtool_tests` writes the
test file for a rule file; ``tests/unit/dashboards/test_alert_rules.py`` runs promtool on it.

A rule added to :func:`dashboards.alerts.alert_rules` gets its case here (:data:`CASES`); the unit
test fails for a rule without one, except the rules listed in :data:`NOT_COVERED`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from dashboards import alerts as al
from dashboards import promql as pq
from inference import metrics as im
from ingest import metrics as gm

#: Rules older than these cases, checked by `promtool check rules` and the integration tests only.
NOT_COVERED = frozenset({"GrdlineDefectRateHigh", "GrdlineFramesLate", "GrdlineConsumerLag"})
#: Sample interval of the input series, and when the alerts are checked (after every `for:`).
INTERVAL = "15s"
EVAL_TIME = "15m"
SAMPLES = 80  # 20 minutes of samples


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{sel}}}", "values": values}


def _rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in al.alert_rules()["groups"][0]["rules"]}


def _expect(alert: str, **labels: str) -> dict[str, Any]:
    """One expected alert: the rule's labels plus ``labels``, its summary with them filled in."""
    rule = _rules()[alert]
    summary = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)],
                     rule["annotations"]["summary"])
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": {"summary": summary}}


def _case(name: str, series: list[dict[str, str]], alert: str, expected: list[dict[str, Any]]) -> dict:
    return {"name": name, "interval": INTERVAL, "input_series": series,
            "alert_rule_test": [{"eval_time": EVAL_TIME, "alertname": alert, "exp_alerts": expected}]}


def _steady(step: float) -> str:
    return f"0+{step}x{SAMPLES}"


def _flat(value: float = 0) -> str:
    return f"{value}x{SAMPLES}"


def no_frames_consumed() -> list[dict]:
    """cam0 delivers; cam1 stopped (its counter flat); cam2 never delivered (no series at all,
    as for a misnamed or deleted topic)."""
    exp, consumed = im.prometheus_name(im.CAMERA_EXPECTED), im.prometheus_name(im.FRAMES_CONSUMED)
    series = [_series(exp, _flat(1), line="L1", camera=c, topic="frames") for c in ("cam0", "cam1", "cam2")]
    series += [_series(consumed, _steady(10), line="L1", camera="cam0"),
               _series(consumed, _flat(500), line="L1", camera="cam1")]
    alert = "GrdlineNoFramesConsumed"
    return [_case("a camera stopped and one never delivered; a healthy one does not fire", series, alert,
                  [_expect(alert, line="L1", camera=c, topic="frames") for c in ("cam1", "cam2")])]


def failsafe_ratio() -> list[dict]:
    """L1: the model fails every frame (all fail-safe, reason model_failure); L2: healthy, one
    late fail-safe in a thousand (under the ratio)."""
    consumed, failsafe = im.prometheus_name(im.FRAMES_CONSUMED), im.prometheus_name(im.FRAMES_FAILSAFE)
    series = [
        _series(consumed, _steady(20), line="L1", camera="cam0"),
        _series(failsafe, _steady(20), line="L1", camera="cam0", reason="model_failure"),
        _series(consumed, _steady(20), line="L2", camera="cam0"),
        _series(failsafe, _steady(0.02), line="L2", camera="cam0", reason="late"),
    ]
    alert = "GrdlineFailsafeRatioHigh"
    return [_case("every frame of L1 fail-safe; L2 healthy", series, alert,
                  [_expect(alert, line="L1", reason="model_failure")])]


def serve_app_not_running() -> list[dict]:
    alert, app = "GrdlineServeAppNotRunning", al.DEFAULT_APP_NAME
    status = pq.SERVE_APP_STATUS
    deploy_failed = 1
    return [
        _case("the app is RUNNING (another app failed)",
              [_series(status, _flat(pq.SERVE_APP_RUNNING), application=app),
               _series(status, _flat(deploy_failed), application="other-app")], alert, []),
        _case("the app failed to deploy", [_series(status, _flat(deploy_failed), application=app)],
              alert, [_expect(alert, application=app)]),
        _case("no status of the app at all (Serve or the app gone)",
              [_series(status, _flat(pq.SERVE_APP_RUNNING), application="other-app")],
              alert, [_expect(alert, application=app)]),
    ]


def camera_publish_failing() -> list[dict]:
    failures = gm.METRIC_NAMES["publish_failures"]
    published = gm.METRIC_NAMES["frames_published"]
    series = [_series(failures, _steady(5), line="L1", camera="cam0"),
              _series(failures, _flat(3), line="L1", camera="cam1"),
              _series(published, _steady(10), line="L1", camera="cam1")]
    alert = "GrdlineCameraPublishFailing"
    return [_case("cam0 cannot publish; cam1 publishes (old failures only)", series, alert,
                  [_expect(alert, line="L1", camera="cam0")])]


def station_no_verdict() -> list[dict]:
    fired = im.STATION_FIRED_SERIES
    series = [_series(fired, _steady(1), line="L1", reason=im.STATION_NO_VERDICT),
              _series(fired, _flat(2), line="L2", reason=im.STATION_NO_VERDICT),
              _series(fired, _steady(3), line="L2", reason=im.STATION_REJECT)]
    alert = "GrdlineStationNoVerdict"
    return [_case("L1 fires without verdicts; L2 only rejects on verdicts", series, alert,
                  [_expect(alert, line="L1")])]


def dead_letters_per_camera() -> list[dict]:
    dead = im.prometheus_name(im.FRAMES_DEAD_LETTERED)
    series = [_series(dead, _steady(2), line="L1", camera="cam0", stage="decode"),
              _series(dead, _flat(7), line="L1", camera="cam1", stage="decode")]
    alert = "GrdlineDeadLettersPerCamera"
    return [_case("cam0 sends undecodable frames; cam1 did once, long ago", series, alert,
                  [_expect(alert, line="L1", camera="cam0", stage="decode")])]


#: alert name → its cases.
def redis_memory_high() -> list[dict]:
    """Full: used at 95 % of maxmemory; healthy: at 80 % (the sizing's steady state); unbounded:
    no maxmemory set (0) fires too."""
    alert = "GrdlineRedisMemoryHigh"
    used, bound = im.prometheus_name(im.REDIS_USED_MEMORY), im.prometheus_name(im.REDIS_MAXMEMORY)
    mb = 1024 * 1024

    def case(name: str, used_b: float, max_b: float, fires: bool) -> dict:
        # two replicas report the same Redis
        series = [_series(used, _flat(used_b), replica=r) for r in ("a", "b")]
        series += [_series(bound, _flat(max_b), replica=r) for r in ("a", "b")]
        return _case(name, series, alert, [_expect(alert)] if fires else [])

    return [case("redis memory 95 %", 95 * mb, 100 * mb, True),
            case("redis memory 80 %", 80 * mb, 100 * mb, False),
            case("redis without maxmemory", 80 * mb, 0, True)]


CASES: dict[str, Callable[[], list[dict]]] = {
    "GrdlineNoFramesConsumed": no_frames_consumed,
    "GrdlineRedisMemoryHigh": redis_memory_high,
    "GrdlineFailsafeRatioHigh": failsafe_ratio,
    "GrdlineServeAppNotRunning": serve_app_not_running,
    "GrdlineCameraPublishFailing": camera_publish_failing,
    "GrdlineStationNoVerdict": station_no_verdict,
    "GrdlineDeadLettersPerCamera": dead_letters_per_camera,
}


def promtool_tests(rule_file: str) -> dict[str, Any]:
    """The ``promtool test rules`` document for ``rule_file`` (rendered by
    :func:`dashboards.alerts.render_alert_rules` with its defaults)."""
    tests = [case for make in CASES.values() for case in make()]
    return {"rule_files": [rule_file], "evaluation_interval": INTERVAL, "tests": tests}


def render_promtool_tests(rule_file: str) -> str:
    return yaml.safe_dump(promtool_tests(rule_file), sort_keys=False)
