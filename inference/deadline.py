"""Decision deadlines and the late policy (pure).

A frame's deadline is ``captured_at + deadline_ms``, where ``deadline_ms`` comes from the frame
header, else the recipe's default, else the app default (None = no deadline). The ingress gives the
model ``deadline - sink_margin - now`` to answer; a frame whose model answer does not arrive in that
budget (or whose budget is already gone when it is received) is **late** and follows the policy:

* ``reject`` (fail-safe): the item is rejected (reason ``late``) — a part nobody inspected in time
  never ships;
* ``pass``: the item passes, the result is flagged ``late`` for review.

Either way the frame is counted (``grdline_frames_late_total``) and its result says ``late=1``.

Arithmetic never raises: a capture time so close to the ends of the calendar (year 1 or 9999) that
its deadline cannot be represented raises :class:`DeadlineError` (a ``ValueError`` the decision
core turns into a dead letter, stage ``validate``) — never an ``OverflowError`` escaping into the
event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

LatePolicy = Literal["reject", "pass"]


class DeadlineError(ValueError):
    """A deadline that cannot be computed (capture time at the edge of the calendar)."""


def deadline_at(
    captured_at: datetime,
    header_ms: int | None,
    recipe_ms: int | None,
    default_ms: int | None,
) -> datetime | None:
    """When the decision stops being useful, or None when no deadline applies."""
    for ms in (header_ms, recipe_ms, default_ms):
        if ms is not None:
            try:
                return captured_at + timedelta(milliseconds=ms)
            except (OverflowError, ValueError) as exc:
                raise DeadlineError(f"captured_at {captured_at.isoformat()} + {ms} ms is out of range") from exc
    return None


def budget_s(deadline: datetime | None, now: datetime, margin_ms: float) -> float | None:
    """Seconds the model may take (None = unbounded); <= 0 means already late."""
    if deadline is None:
        return None
    try:
        return (deadline - now).total_seconds() - margin_ms / 1000.0
    except (OverflowError, ValueError):
        return 0.0  # unrepresentable: treated as already late


@dataclass(frozen=True)
class LateDecision:
    """What a late frame's result says: decision (True = reject) and the policy applied."""

    decision: bool
    policy: LatePolicy


def late_decision(policy: LatePolicy) -> LateDecision:
    if policy == "reject":
        return LateDecision(decision=True, policy="reject")
    if policy == "pass":
        return LateDecision(decision=False, policy="pass")
    raise ValueError(f"unknown late policy {policy!r} (expected 'reject' or 'pass')")
