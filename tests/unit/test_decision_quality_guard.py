"""The guard's decision quality on the real history, fast and seeded (docs/decisions.md, "Guard").

The bounds are held statistically (:mod:`simulation.rates`): false rollbacks of healthy (A/A)
champions — the previous champion retrained on the same data with another seed — fail only when
their whole interval lies above 1% of weeks; a broken kind fails only when its share rolled back
at the first weekly check lies wholly below its documented bound.
"""

from __future__ import annotations

import pytest

from registry_guard.policy import load_guard_policy, load_policy
from simulation.guard import BROKEN_KINDS, HEALTHY, IDENTICAL, simulate_guard
from simulation.replay import Replay

#: The CI set-up per use case: few promotions, few weeks, a few row draws, and no gate-passed
#: retrain row (not a bound; it costs a gate evaluation per point) (docs: "Held in the tests").
CI_RUNS = {
    "cdnow": dict(promotions=1, weeks_after=4, resamples=1),
    "hotel": dict(promotions=3, weeks_after=4, resamples=2),
}


@pytest.mark.parametrize("name", ["cdnow", "hotel"])
def test_default_guard_holds_its_documented_bounds(replays: dict[str, Replay], name: str) -> None:
    result = simulate_guard(
        replays[name],
        load_policy(),
        load_guard_policy(),
        seed=20261203,
        healthy_kinds=(HEALTHY, IDENTICAL),
        **CI_RUNS[name],
    )

    assert result.check_bounds() == [], result.table()
    rate = result.false_rollback()
    assert rate is not None and rate.n >= 4
    assert sorted(result.kinds()) == sorted(BROKEN_KINDS)
    record = result.record()
    assert record["violations"] == []
    assert set(record["broken"]) == set(BROKEN_KINDS)  # type: ignore[arg-type]
    assert "| healthy champion |" in result.table()


def test_a_guard_that_rolls_back_healthy_champions_fails_the_bound(
    replays: dict[str, Replay],
) -> None:
    # PSI 0.01 calls every healthy week "shifted": the false-rollback bound must catch it. One
    # promotion (the CI run's: its A/A models are cached), one week, no broken kinds.
    twitchy = load_guard_policy().model_copy(update={"psi_threshold": 0.01})

    result = simulate_guard(
        replays["cdnow"],
        load_policy(),
        twitchy,
        promotions=1,
        weeks_after=1,
        kinds=(),
        healthy_kinds=(HEALTHY,),
    )

    rate = result.false_rollback()
    assert rate is not None and rate.above(0.01)
    assert any("false rollbacks" in v for v in result.check_bounds())
