"""Alert rules as code (Prometheus rule groups): the line is late, dropping, rejecting, lagging —
or quiet, or scrapping everything.

Loaded by the local stack's Prometheus (``rule_files``) and by any Prometheus/Grafana that reads
Prometheus-format rules (``deploy/render.py`` writes the compose and Kubernetes copies). Every
expression is built from the metric names the code defines (:mod:`inference.metrics`,
:mod:`ingest.metrics`, Ray Serve's in :mod:`dashboards.promql`). Thresholds, rate windows and the
``for:`` durations are arguments: a plant tunes them, and the integration tests load the same
expressions with short windows (``tests/integration/dashboards/test_alerts_fire.py``).

Ways the line goes quiet or scraps everything, and the rule that sees each:

* a camera, or the whole frames topic (misnamed, deleted, nobody writes), delivers nothing while
  the config expects it → ``GrdlineNoFramesConsumed`` (expected pairs come from the ingress'
  ``grdline_camera_expected`` gauge; ``unless`` makes a missing consumed series count as zero);
* the model fails or answers NaN for every frame, or frames time out → ``GrdlineFailsafeRatioHigh``
  (fail-safe verdicts over consumed frames, by reason);
* the Serve application is not RUNNING (deploy failed, unhealthy, deleted, or no status at all:
  ``absent``) → ``GrdlineServeAppNotRunning``;
* cameras cannot publish (broker down, oversize, timeouts) → ``GrdlineCameraPublishFailing``;
* the reject station fired for an item without a verdict → ``GrdlineStationNoVerdict``;
* frames dead-lettered, per camera → ``GrdlineDeadLettersPerCamera``.
* Redis nears ``maxmemory`` (then it refuses results: no decision is stored) →
  ``GrdlineRedisMemoryHigh``.
"""

from __future__ import annotations

from typing import Any

import yaml

from dashboards import promql as pq
from inference import metrics as im
from inference.config import ServeAppConfig
from inference.redis_memory import ALERT_FILL_RATIO
from ingest import metrics as gm

RULE_GROUP = "grdline"
#: The Serve application the production rules watch (the config's default ``app_name``).
DEFAULT_APP_NAME: str = ServeAppConfig.model_fields["app_name"].default


def _name(metric: str) -> str:
    return im.prometheus_name(metric)


def _rate(name: str, window: str = "5m", by: str = "line") -> str:
    return f"sum by ({by}) (rate({im.prometheus_name(name)}[{window}]))"


def no_frames_consumed_expr(window: str = "2m") -> str:
    """Every expected (line, camera) with no frame consumed over ``window`` — also when its
    consumed series does not exist at all (a misnamed topic: nothing was ever consumed)."""
    expected = f"max by (line, camera, topic) ({_name(im.CAMERA_EXPECTED)}) > 0"
    consumed = f"{_rate(im.FRAMES_CONSUMED, window, 'line, camera')} > 0"
    return f"({expected}) unless on (line, camera) ({consumed})"


def failsafe_ratio_expr(ratio_max: float = 0.05, window: str = "5m") -> str:
    """Fail-safe verdicts per line and reason over the line's consumed frames."""
    failsafe = _rate(im.FRAMES_FAILSAFE, window, "line, reason")
    consumed = _rate(im.FRAMES_CONSUMED, window, "line")
    return f"{failsafe} / on (line) group_left clamp_min({consumed}, 1e-9) > {ratio_max}"


def serve_app_not_running_expr(app_name: str = DEFAULT_APP_NAME) -> str:
    """The application's status is not RUNNING, or Prometheus has no status of it at all."""
    sel = f'{pq.SERVE_APP_STATUS}{{application="{app_name}"}}'
    return f"(max by (application) ({sel}) != {pq.SERVE_APP_RUNNING}) or absent({sel})"


def camera_publish_failing_expr(window: str = "5m", failures_per_s_max: float = 0.0) -> str:
    failures = gm.METRIC_NAMES["publish_failures"]
    return f"sum by (line, camera) (rate({failures}[{window}])) > {failures_per_s_max}"


def station_no_verdict_expr(window: str = "5m") -> str:
    sel = f'{im.STATION_FIRED_SERIES}{{reason="{im.STATION_NO_VERDICT}"}}'
    return f"sum by (line) (increase({sel}[{window}])) > 0"


def redis_memory_high_expr(fill_max: float = ALERT_FILL_RATIO) -> str:
    """Redis ``used_memory`` over ``maxmemory`` (as the ingress replicas sample them) above
    ``fill_max``; +Inf, so firing too, when no ``maxmemory`` is set."""
    used, bound = _name(im.REDIS_USED_MEMORY), _name(im.REDIS_MAXMEMORY)
    return f"max({used}) / max({bound}) > {fill_max}"


def dead_letters_expr(window: str = "5m") -> str:
    return f"{_rate(im.FRAMES_DEAD_LETTERED, window, 'line, camera, stage')} > 0"


def alert_rules(
    defect_rate_max: float = 0.2,
    late_rate_max: float = 0.01,
    lag_max_frames: int = 5000,
    failsafe_ratio_max: float = 0.05,
    app_name: str = DEFAULT_APP_NAME,
    rate_window: str = "5m",
    quiet_window: str = "2m",
    hold: str | None = None,
) -> dict[str, Any]:
    """The rule file as a dict; thresholds are arguments so each plant can tune them.

    ``rate_window`` is the window of the ratio and failure rates, ``quiet_window`` the one in which
    a camera must deliver a frame; ``hold`` replaces every rule's ``for:`` (tests: seconds).
    """

    def rule(alert: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
        return {"alert": alert, "expr": expr, "for": hold if hold is not None else for_,
                "labels": {"severity": severity}, "annotations": {"summary": summary}}

    rules = [
        rule("GrdlineDefectRateHigh",
             f"{_rate(im.FRAMES_DEFECTIVE, rate_window)} / clamp_min({_rate(im.FRAMES_INSPECTED, rate_window)},"
             f" 1e-9) > {defect_rate_max}", "5m", "warning",
             f"Line {{{{ $labels.line }}}}: more than {defect_rate_max:.0%} of frames defective (process drift?)"),
        rule("GrdlineFramesLate",
             f"{_rate(im.FRAMES_LATE, rate_window)} / clamp_min({_rate(im.FRAMES_CONSUMED, rate_window)}, 1e-9)"
             f" > {late_rate_max}", "2m", "critical",
             "Line {{ $labels.line }}: decisions miss their deadline"),
        rule("GrdlineDeadLettersPerCamera", dead_letters_expr(rate_window), "5m", "warning",
             "Line {{ $labels.line }} camera {{ $labels.camera }}: frames go to the dead-letter "
             "topic ({{ $labels.stage }})"),
        rule("GrdlineConsumerLag",
             f"sum by (topic) ({_name(im.CONSUMER_LAG)}) > {lag_max_frames}", "2m", "warning",
             "Inference is falling behind on {{ $labels.topic }}"),
        rule("GrdlineNoFramesConsumed", no_frames_consumed_expr(quiet_window), "1m", "critical",
             "Line {{ $labels.line }} camera {{ $labels.camera }}: no frame consumed from "
             "{{ $labels.topic }} (camera stopped, topic misnamed or deleted, consumer stalled)"),
        rule("GrdlineFailsafeRatioHigh", failsafe_ratio_expr(failsafe_ratio_max, rate_window), "2m",
             "critical",
             f"Line {{{{ $labels.line }}}}: more than {failsafe_ratio_max:.0%} of frames decided by the "
             "fail-safe policy ({{ $labels.reason }}): the model is not deciding"),
        rule("GrdlineServeAppNotRunning", serve_app_not_running_expr(app_name), "2m", "critical",
             f"Serve application {app_name} is not RUNNING (deploy failed, unhealthy or gone)"),
        rule("GrdlineCameraPublishFailing", camera_publish_failing_expr(rate_window), "2m", "critical",
             "Line {{ $labels.line }} camera {{ $labels.camera }}: frames are not accepted by the "
             "broker (dropped after the delivery timeout)"),
        rule("GrdlineStationNoVerdict", station_no_verdict_expr(rate_window), "0m", "critical",
             "Line {{ $labels.line }}: the reject station fired for items without a verdict"),
        rule("GrdlineRedisMemoryHigh", redis_memory_high_expr(), "5m", "critical",
             f"Redis above {ALERT_FILL_RATIO:.0%} of maxmemory (or none set): at maxmemory it refuses "
             "results and the line stops deciding (deploy/README.md, Redis memory)"),
    ]
    return {"groups": [{"name": RULE_GROUP, "rules": rules}]}


def render_alert_rules(**thresholds: Any) -> str:
    return yaml.safe_dump(alert_rules(**thresholds), sort_keys=False)
