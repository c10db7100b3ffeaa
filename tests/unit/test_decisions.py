"""The retrain rule: one function decides, first match wins, and drift is judged by the one drift
computation (its ``exceeded``), never compared again here."""

from __future__ import annotations

import pytest

from pipeline.decisions import decide_retrain
from rollguard.settings import Settings

BASE = {
    "has_champion": True,
    "forced": False,
    "guard_state": "ok",
    "champion_age_weeks": 2,
    "max_champion_age_weeks": 8,
    "drift_share": 0.1,
    "drift_threshold": 0.5,
    "drift_exceeded": False,
}


@pytest.mark.parametrize(
    ("changes", "retrain", "reason"),
    [
        ({}, False, "no_retrain_needed"),
        ({"has_champion": False, "forced": True}, True, "no_champion"),
        ({"forced": True, "guard_state": "degraded"}, True, "forced"),
        ({"guard_state": "degraded", "champion_age_weeks": 20}, True, "guard_degraded"),
        ({"champion_age_weeks": 9, "drift_exceeded": True}, True, "champion_stale"),
        ({"drift_share": 0.7, "drift_exceeded": True}, True, "drift"),
        ({"guard_state": "inconclusive"}, False, "no_retrain_needed"),
    ],
)
def test_first_matching_rule_wins(changes: dict, retrain: bool, reason: str) -> None:
    decision = decide_retrain(**{**BASE, **changes})
    assert (decision.retrain, decision.reason) == (retrain, reason)


def test_drift_is_the_drift_computations_verdict_not_a_second_comparison() -> None:
    # A share above the threshold that the drift computation did not judge exceeded (e.g. not
    # enough rows to test) does not trigger a retrain; an unmeasured drift never does.
    assert not decide_retrain(**{**BASE, "drift_share": 0.9, "drift_exceeded": False}).retrain
    assert not decide_retrain(**{**BASE, "drift_share": None, "drift_exceeded": None}).retrain
    moved = decide_retrain(**{**BASE, "drift_share": 0.6, "drift_exceeded": True})
    assert moved.retrain and "60% of features drifted" in moved.detail


def test_default_age_limit_is_the_measured_backstop() -> None:
    # The defaults come from the trigger replay (docs/decisions.md, retrain trigger): the drift
    # share decides week to week; the age limit is a half-year backstop (at 8 weeks it only added
    # retrains the gate did not show better). A 20-week-old champion without drift is kept.
    fields = Settings.model_fields
    limits = {
        "max_champion_age_weeks": fields["max_champion_age_weeks"].default,
        "drift_threshold": fields["retrain_drift_threshold"].default,
    }
    assert limits == {"max_champion_age_weeks": 26, "drift_threshold": 0.5}
    kept = decide_retrain(**{**BASE, **limits, "champion_age_weeks": 20})
    assert (kept.retrain, kept.reason) == (False, "no_retrain_needed")
    assert "limit 26" in kept.detail
    stale = decide_retrain(**{**BASE, **limits, "champion_age_weeks": 27})
    assert (stale.retrain, stale.reason) == (True, "champion_stale")
