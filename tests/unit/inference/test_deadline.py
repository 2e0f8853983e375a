from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inference.deadline import budget_s, deadline_at, late_decision

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_header_beats_recipe_beats_default():
    assert deadline_at(T0, 10, 20, 30) == T0 + timedelta(milliseconds=10)
    assert deadline_at(T0, None, 20, 30) == T0 + timedelta(milliseconds=20)
    assert deadline_at(T0, None, None, 30) == T0 + timedelta(milliseconds=30)
    assert deadline_at(T0, None, None, None) is None


def test_budget_keeps_the_sink_margin_and_goes_negative_when_late():
    dl = T0 + timedelta(milliseconds=100)
    assert budget_s(dl, T0, 5.0) == pytest.approx(0.095)
    assert budget_s(dl, T0 + timedelta(milliseconds=200), 5.0) < 0
    assert budget_s(None, T0, 5.0) is None


def test_late_policies():
    assert late_decision("reject").decision is True
    assert late_decision("pass").decision is False
    with pytest.raises(ValueError, match="unknown late policy"):
        late_decision("maybe")  # type: ignore[arg-type]


def test_deadline_arithmetic_never_overflows():
    from inference.deadline import DeadlineError

    end = datetime(9999, 12, 31, 23, 59, 59, 900000, tzinfo=UTC)
    with pytest.raises(DeadlineError, match="out of range"):
        deadline_at(end, 1000, None, None)
    assert deadline_at(end, None, None, None) is None
    assert budget_s(datetime(1, 1, 1, tzinfo=UTC), end, 5.0) < 0
