"""Alert rules as code (Prometheus rule groups): the line is late, dropping, rejecting or lagging.

Loaded by the local stack's Prometheus (``rule_files``) and by any Prometheus/Grafana that reads
Prometheus-format rules. Every expression is built from the metric names the code defines.
"""

from __future__ import annotations

from typing import Any

import yaml

from inference import metrics as im

RULE_GROUP = "grdline"


def _rate(name: str) -> str:
    return f"sum by (line) (rate({im.prometheus_name(name)}[5m]))"


def alert_rules(
    defect_rate_max: float = 0.2,
    late_rate_max: float = 0.01,
    lag_max_frames: int = 5000,
) -> dict[str, Any]:
    """The rule file as a dict; thresholds are arguments so each plant can tune them."""
    rules = [
        {
            "alert": "GrdlineDefectRateHigh",
            "expr": f"{_rate(im.FRAMES_DEFECTIVE)} / clamp_min({_rate(im.FRAMES_INSPECTED)}, 1e-9)"
                    f" > {defect_rate_max}",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": "Line {{ $labels.line }}: more than "
                            f"{defect_rate_max:.0%} of frames defective (process drift?)"},
        },
        {
            "alert": "GrdlineFramesLate",
            "expr": f"{_rate(im.FRAMES_LATE)} / clamp_min({_rate(im.FRAMES_CONSUMED)}, 1e-9)"
                    f" > {late_rate_max}",
            "for": "2m",
            "labels": {"severity": "critical"},
            "annotations": {"summary": "Line {{ $labels.line }}: decisions miss their deadline"},
        },
        {
            "alert": "GrdlineDeadLetters",
            "expr": f"{_rate(im.FRAMES_DEAD_LETTERED)} > 0",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": "Line {{ $labels.line }}: frames go to the dead-letter topic"},
        },
        {
            "alert": "GrdlineConsumerLag",
            "expr": f"sum by (topic) ({im.prometheus_name(im.CONSUMER_LAG)}) > {lag_max_frames}",
            "for": "2m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": "Inference is falling behind on {{ $labels.topic }}"},
        },
    ]
    return {"groups": [{"name": RULE_GROUP, "rules": rules}]}


def render_alert_rules(**thresholds: Any) -> str:
    return yaml.safe_dump(alert_rules(**thresholds), sort_keys=False)
