"""Whether a weekly run needs a new challenger at all: one function decides, and says why.

The rule, first match wins:

1. ``forced`` (a person asked for it, or there is no champion yet) → retrain;
2. the live guard reported the champion ``degraded`` → retrain;
3. the champion is older than ``max_champion_age_weeks`` (data time: weeks from the evaluation
   cutoff it was trained for to the current one) → retrain;
4. the share of drifted features between the champion's evaluation-cutoff features (the newest
   population it was validated on; the monitor step's ``run/retrain_drift_share``) and this week's
   features is above ``drift_threshold`` → retrain;
5. otherwise no retrain: the run still scores, monitors and guards, and records this evidence.

The defaults (``max_champion_age_weeks`` 26, ``retrain_drift_threshold`` 0.5) are chosen from the
replay of every candidate trigger over both built-in use cases (``simulation/trigger.py``,
``docs/decisions.md``, retrain trigger): the drift share had the highest share of retrains whose
challenger the gate's interval showed better on both; importance-weighted drift, score PSI,
estimated performance (CBPE) and fixed cadences did worse on at least one; an 8-week age limit only
added retrains that were not shown better, so the age rule is a half-year backstop that never fired
in either replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RetrainReason = Literal[
    "forced", "no_champion", "guard_degraded", "champion_stale", "drift", "no_retrain_needed"
]


@dataclass(frozen=True)
class RetrainDecision:
    """Outcome of :func:`decide_retrain` with the evidence it used."""

    retrain: bool
    reason: RetrainReason
    detail: str
    drift_share: float | None
    drift_threshold: float
    champion_age_weeks: int | None
    max_champion_age_weeks: int
    guard_state: str | None


def decide_retrain(
    *,
    has_champion: bool,
    forced: bool,
    guard_state: str | None,
    champion_age_weeks: int | None,
    max_champion_age_weeks: int,
    drift_share: float | None,
    drift_threshold: float,
    drift_exceeded: bool | None = None,
) -> RetrainDecision:
    """Apply the rule of the module docstring.

    Args:
        has_champion: whether alias ``champion`` points at a version.
        forced: a person forced a retrain (``run_conf={"force_retrain": true}``).
        guard_state: the guard's latest state (``ok``, ``degraded``, ``inconclusive``) or None.
        champion_age_weeks: weeks of data time since the champion's evaluation cutoff, or None.
        max_champion_age_weeks: retrain when the champion is older than this.
        drift_share: share of features that drifted, in [0, 1], or None when not measured.
        drift_threshold: the threshold the share was judged against (reported).
        drift_exceeded: the judgement of the one drift computation
            (:attr:`monitoring.compute.DriftShare.exceeded`, the monitor step's
            ``retrain_drift_exceeded``); None when drift was not measured.
    """

    def made(retrain: bool, reason: RetrainReason, detail: str) -> RetrainDecision:
        return RetrainDecision(
            retrain=retrain,
            reason=reason,
            detail=detail,
            drift_share=drift_share,
            drift_threshold=drift_threshold,
            champion_age_weeks=champion_age_weeks,
            max_champion_age_weeks=max_champion_age_weeks,
            guard_state=guard_state,
        )

    if not has_champion:
        return made(True, "no_champion", "there is no champion yet: train the first one")
    if forced:
        return made(True, "forced", "a retrain was requested for this run")
    if guard_state == "degraded":
        return made(True, "guard_degraded", "the live guard reported the champion degraded")
    if champion_age_weeks is not None and champion_age_weeks > max_champion_age_weeks:
        return made(
            True,
            "champion_stale",
            f"the champion is {champion_age_weeks} weeks old (limit {max_champion_age_weeks})",
        )
    if drift_exceeded and drift_share is not None:
        return made(
            True,
            "drift",
            f"{drift_share:.0%} of features drifted (threshold {drift_threshold:.0%})",
        )
    drift_text = "not measured" if drift_share is None else f"{drift_share:.0%}"
    return made(
        False,
        "no_retrain_needed",
        f"champion {champion_age_weeks} weeks old (limit {max_champion_age_weeks}), "
        f"drift {drift_text} (threshold {drift_threshold:.0%}), guard {guard_state or 'n/a'}",
    )
