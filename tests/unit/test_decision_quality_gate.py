"""The gate's measured error rates, held in CI: a fast seeded run of :mod:`simulation.gate` on the
real data of both built-in use cases must stay within the documented bounds, and a deliberately bad
policy must break them (so this test can fail)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry_guard.gate import ModelEvidence, evaluate_gate
from registry_guard.measured import (
    GATE_SECTION,
    RERUN,
    gate_error_rates,
    policy_fields,
    read_measured,
    write_section,
)
from registry_guard.policy import GatePolicy, load_policy
from simulation.gate import GateSimulation, simulate_gate

#: The CI run: fewer promotion weeks and replicas than the bench, the real policy.
CI_RUNS: dict[str, dict[str, Any]] = {
    # 2.5-5 s per gate call on 23,570 rows: one week, the two challengers with a bound.
    "cdnow": {"weeks": 1, "replicas": 10, "scenarios": ("margin", "better")},
    # ~0.05 s per call: every challenger on three weeks.
    "hotel": {"weeks": 3, "replicas": 20, "scenarios": None},
}
SEED = 11
#: Deliberately bad policies (section fields) and the promotion weeks they are judged on. The
#: slice margin is widened too: with the primary margin alone at 0.1, the slices' own 0.01 margin
#: still rejects the degraded model (measured: 10 of 10 replicas ``slice_regressed`` on CDNOW).
BAD = {
    "cdnow": ({"non_inferiority_margin": 0.1, "slice_margin": 0.1}, 1),
    "hotel": ({"relative_margin": 0.5, "slice_relative_margin": 0.5}, 3),
}


@pytest.fixture(scope="module")
def simulations(replays: dict[str, Any]) -> dict[str, GateSimulation]:
    policy = load_policy()
    return {
        name: simulate_gate(replays[name], policy, seed=SEED, **run)
        for name, run in CI_RUNS.items()
    }


@pytest.mark.parametrize("name", sorted(CI_RUNS))
def test_default_policy_holds_its_documented_bounds(
    simulations: dict[str, GateSimulation], name: str
) -> None:
    sim = simulations[name]
    assert sim.check_bounds() == [], sim.table()
    margin = sim.result("margin")
    assert margin.promoted().n == CI_RUNS[name]["replicas"] * len(sim.weeks)
    # The challengers have the population differences they were built to have.
    target = 0.05 if sim.regression else -0.01
    assert margin.deltas.values() and all(abs(d - target) < 1e-5 for d in margin.deltas.values())
    better = -0.05 if sim.regression else 0.02
    assert all(abs(d - better) < 1e-5 for d in sim.result("better").deltas.values())
    record = sim.record()
    assert "in " in record["scenarios"]["margin"]["sentence"]
    assert record["violations"] == []


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_deliberately_bad_policy_fails_the_false_promotion_bound(
    replays: dict[str, Any], name: str
) -> None:
    default = load_policy()
    section = "regression" if name == "hotel" else "classification"
    fields, weeks = BAD[name]
    bad = GatePolicy.model_validate(
        {**default.model_dump(), section: {**getattr(default, section).model_dump(), **fields}}
    )
    sim = simulate_gate(
        replays[name], bad, replicas=10, weeks=weeks, seed=SEED, scenarios=("margin",)
    )
    problems = sim.check_bounds()
    assert any("false promotion of a model worse by the margin" in p for p in problems), sim.table()


def test_measured_rates_match_the_loaded_policy_only(tmp_path: Path) -> None:
    path = tmp_path / "measured.json"
    policy = load_policy()
    entry = {
        "policy": policy_fields(policy, "binary_classification"),
        "command": RERUN,
        "date": "2026-12-03",
        "replicas_per_week": 4,
        "sentences": ["this gate rule promotes a model worse by the margin in 1.0% [0.1, 3.0]"],
        "rates": {"margin": {"k": 1, "n": 100, "rate": 0.01}},
    }
    write_section("cdnow", GATE_SECTION, entry, path)
    found = gate_error_rates("cdnow", policy, "binary_classification", path)
    assert found["status"] == "measured" and found["rates"]["margin"]["k"] == 1
    assert found["sentences"] == entry["sentences"]

    wider = GatePolicy.model_validate(
        {**policy.model_dump(), "classification": {"non_inferiority_margin": 0.1}}
    )
    missed = gate_error_rates("cdnow", wider, "binary_classification", path)
    assert missed["status"] == "not_measured"
    assert missed["reason"].startswith(
        "not measured for this policy: classification.non_inferiority_margin differs"
    )
    assert RERUN in missed["reason"]
    assert gate_error_rates("hotel", policy, "regression", path)["status"] == "not_measured"
    write_section("cdnow", "guard", {**entry, "rates": {}}, path)
    assert set(read_measured(path)["usecases"]["cdnow"]) == {"gate", "guard"}
    with pytest.raises(ValueError, match="needs"):
        write_section("cdnow", "trigger", {"policy": {}}, path)


@pytest.mark.parametrize(
    ("usecase", "task"), [("cdnow", "binary_classification"), ("hotel", "regression")]
)
def test_the_shipped_measurements_match_the_default_policy(usecase: str, task: str) -> None:
    found = gate_error_rates(usecase, load_policy(), task)
    assert found["status"] == "measured", found
    assert any("worse by the margin" in s for s in found["sentences"])
    assert found["rates"]["margin"]["n"] >= 30


def test_the_gate_report_carries_the_measured_rates() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(3000) < 0.2).astype(int)
    scores = np.clip(0.2 + 0.3 * (labels - 0.2) + rng.normal(0, 0.1, 3000), 0, 1)
    policy = load_policy()
    decision = evaluate_gate(
        ModelEvidence(scores, "2", feature_names=("a",)),
        ModelEvidence(scores, "1", feature_names=("a",)),
        labels,
        np.ones(3000),
        {},
        policy,
        task="binary_classification",  # type: ignore[arg-type]
        expected_features=("a",),
    )
    assert decision.measured_error_rates is None  # evaluate_gate stays pure
    rates = gate_error_rates("cdnow", policy, "binary_classification")
    shown = replace(decision, measured_error_rates=rates)
    data = shown.to_dict()
    assert data["measured_error_rates"]["status"] == "measured"
    assert "worse by the margin" in shown.to_json()
    assert "## Measured error rates of this gate rule" in shown.to_markdown()
    assert rates["sentences"][0] in shown.to_markdown()
    other = GatePolicy.model_validate({**policy.model_dump(), "n_resamples": 2000})
    unmeasured = replace(
        decision, measured_error_rates=gate_error_rates("cdnow", other, "binary_classification")
    )
    assert "not measured for this policy: n_resamples differs" in unmeasured.to_markdown()


@pytest.mark.parametrize(
    "content",
    [
        "",
        '{"schema": 1, "usecases": ',
        '{"schema": 2, "usecases": {}}',
        '{"schema": 1, "usecases": []}',
        '{"schema": 1, "usecases": {"cdnow": {"gate": {"command": "x"}}}}',
        '{"schema": 1, "usecases": {"cdnow": {"gate": "a string"}}}',
        '{"schema": 1, "usecases": {"cdnow": {"gate": {"policy": null, "command": "x", '
        '"date": "d", "rates": {}}}}}',
        "[1, 2]",
    ],
)
def test_a_damaged_measured_file_never_stops_a_gate_decision(tmp_path: Path, content: str) -> None:
    path = tmp_path / "measured.json"
    path.write_text(content)
    found = gate_error_rates("cdnow", load_policy(), "binary_classification", path)
    assert found["status"] == "not_measured"
    assert "unreadable" in found["reason"] and "rerun" in found["reason"]


def test_a_measured_path_that_is_a_folder_is_reported_not_raised(tmp_path: Path) -> None:
    found = gate_error_rates("cdnow", load_policy(), "binary_classification", tmp_path)
    assert found["status"] == "not_measured" and "unreadable" in found["reason"]
