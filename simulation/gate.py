"""How often the validation gate decides wrongly, measured on the real data of a use case.

Question
--------
:func:`registry_guard.gate.evaluate_gate` promotes a challenger when it is *non-inferior* to the
champion on the out-of-time evaluation rows. Its error rates are properties of the rule (policy) and
of the data (how many rows, how noisy the metric): this module measures them by simulation on the
real evaluation sets of a use case's replayed history (:class:`simulation.replay.Replay`).

Method
------
Population. For each of a few *promotion weeks* spread evenly over the weeks that can train (the
first, the middle and the last by default; :func:`promotion_weeks`), the population is the real
evaluation set of that week's training (:meth:`Replay.evaluation` of its cutoff plan: labels,
values, slices) and the champion is the model the pipeline trains that week (default parameters),
scored on those rows. Every figure below pools the weeks, so no single week's accident decides it.

Challengers whose population difference ``Δ`` from the champion is known by construction
(primary metric: classification ``AP(challenger) - AP(champion)``; regression
``(MAE(challenger) - MAE(champion)) / MAE(champion)``; both measured on the whole population with
:func:`domain.metrics.classification_point_metrics` / :func:`~domain.metrics.regression_point_metrics`):

* ``identical``: the champion's own scores (``Δ = 0`` exactly; the gate's CI is ``[0, 0]``).
* ``retrain`` (A/A): two retrains of the same week with different seeds. The default parameters do
  not subsample, so both use ``subsample = colsample_bytree = 0.8`` (:data:`SUBSAMPLED`) and XGBoost
  seeds ``seed + 1`` (champion) and ``seed + 2`` (challenger); ``Δ`` is what it is on the population.
* ``margin``, ``margin_2x``, ``margin_5x``: the champion degraded so that the population
  ``Δ`` equals ``-1``, ``-2`` and ``-5`` *documented* margins (:data:`HARM_AP` = 0.01 AP,
  :data:`HARM_MAE_SHARE` = 5% MAE; the default policy's margins). The harm is fixed, not read from
  the policy judged: the target "a model worse by 0.01 AP is promoted in at most 5% of cases" must
  hold for any policy, so a policy with a wider margin (0.1) fails it. (Classification: AP lower by
  0.01, 0.02, 0.05; regression: MAE higher by 5%, 10%, 25%.) Degradation is seeded Gaussian noise
  ``σ·z`` (``z`` fixed per week): on the logit of the probability (classification, so scores stay in
  (0, 1)) or on the prediction in label units, clipped to the label's declared bounds
  (regression); ``σ`` is found by root-finding (:func:`scipy.optimize.brentq`) so that the population
  ``Δ`` equals the target to ``1e-6``. Zero-mean noise keeps the model's ranking of the easy cases and
  its bias; it also costs AUC, Brier score, lift and RMSE, so guardrails may reject such a model for
  their own reasons (reported by reason code).
* ``better``: truly better than the champion. It starts from the seed-``seed + 2`` retrain (a
  different model with its own errors, so the paired difference keeps a real variance) and moves
  its scores toward the label, ``s + t (y - s)``, with ``t`` found by root-finding so that the
  population ``Δ`` is ``+0.02`` AP (classification) or ``-5%`` relative MAE (regression). The
  regression equivalent of +0.02 AP: on the CDNOW population +0.02 AP is about 5% of the champion's AP
  (AP 0.35 to 0.45), and 5% is the regression margin, so "better by one relative margin" is the
  same relative step. Moving toward the label improves calibration (Brier), AUC, RMSE and bias as
  well, so no guardrail is gamed.

Replicas. A replica draws ``n`` rows with replacement from the population of ``n`` rows (the
sampling variability of a real week of the same size; seeded, and the same draw is used for every
challenger of a replica: common random numbers) and calls the real :func:`evaluate_gate` with the
policy given (its ``n_resamples``, ``seed``, ``confidence``, margins and minimum evidence), the real
values, slices, ``expected_features``, ``label``, the use case's targeting budget and, for
regression, the champion week's training median as the constant model. Latency and model size are
not simulated (``None``: those checks skip).

Figures (per use case and challenger; :class:`ScenarioResult`):

* the promote rate (``k`` promotions in ``n`` replicas) with its Clopper-Pearson interval
  (:class:`simulation.rates.Rate`): the *false-promotion rate* for the degraded challengers and the
  *power* for ``identical``, ``retrain`` and ``better``;
* the *coverage*: the share of replicas whose 95% paired-bootstrap CI of the primary difference
  (Efron & Tibshirani 1993, ch. 13; :func:`domain.metrics.paired_bootstrap`) contains the population
  ``Δ`` (among replicas that reached the primary check; ``identical`` is left out of the pooled
  coverage, its CI is ``[0, 0]`` by construction);
* the rejects by reason code, and the "not enough evidence" (``insufficient_evidence``) rate in the
  simulated cases; plus, over every real replay week that can train, the share of weekly
  evaluation sets below the policy's ``min_rows`` / ``min_positives`` (:func:`evidence_shortfall`).

Bounds (:meth:`GateSimulation.check_bounds`). Held statistically with ``check_confidence`` (99%)
Clopper-Pearson intervals, never on exact counts (:mod:`simulation.rates`):

* false promotion at the margin, at 2x and at 5x the margin: at most 5% (violated only when the
  whole interval is above 0.05);
* power for the ``better`` challenger: at least 80% (violated only when the whole interval is
  below 0.80);
* coverage of the 95% interval, pooled over the non-identical challengers: at least 90% (violated
  only when the whole interval is below 0.90; the percentile bootstrap of AP is known to under-cover
  a little, so the bound is looser than the nominal 95%).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit

from domain.evaluation import TrainingDataError
from domain.metrics import classification_point_metrics, regression_point_metrics
from registry_guard.gate import GateDecision
from registry_guard.measured import GATE_SECTION, policy_fields
from registry_guard.policy import ClassificationGatePolicy, GatePolicy
from simulation.rates import Rate
from simulation.replay import Replay

#: Parameters of the A/A retrains (the defaults do not subsample, so a seed alone changes nothing).
SUBSAMPLED: dict[str, float] = {"subsample": 0.8, "colsample_bytree": 0.8}
#: The documented margin: the harm of the "worse by the margin" challengers (classification, AP).
HARM_AP = 0.01
#: The same for regression: MAE higher by this share of the champion's.
HARM_MAE_SHARE = 0.05
#: The truly-better challenger: AP higher by this much (classification).
BETTER_AP = 0.02
#: The truly-better challenger: MAE lower by this share of the champion's (regression).
BETTER_MAE_SHARE = 0.05
#: Bounds held by :meth:`GateSimulation.check_bounds`.
MAX_FALSE_PROMOTION = 0.05
MIN_POWER = 0.80
MIN_COVERAGE = 0.90
#: Confidence of the intervals the bounds are judged with (the report uses 95%).
CHECK_CONFIDENCE = 0.99
REPORT_CONFIDENCE = 0.95
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Scenario:
    """A challenger whose population difference from the champion is known by construction.

    Attributes:
        name: stable identifier (``margin_2x``).
        kind: ``equal``, ``worse`` or ``better`` (what a correct gate should do: promote equal and
            better challengers, reject worse ones).
        margins: for ``worse``, the degradation in units of the documented margin (1, 2, 5).
        label: readable description for tables and sentences.
    """

    name: str
    kind: str
    margins: float
    label: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("identical", "equal", 0.0, "with identical scores"),
    Scenario("retrain", "equal", 0.0, "retrained with another seed (A/A)"),
    Scenario("margin", "worse", 1.0, "worse by the margin"),
    Scenario("margin_2x", "worse", 2.0, "worse by 2x the margin"),
    Scenario("margin_5x", "worse", 5.0, "worse by 5x the margin"),
    Scenario("better", "better", 0.0, "truly better"),
)
_BY_NAME = {s.name: s for s in SCENARIOS}


# --- the population ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Population:
    """One promotion week's real evaluation set and its challengers.

    Attributes:
        week: ISO week of the training.
        labels, values: shape ``(n,)``, the evaluation rows' labels and business values.
        slices: slice name -> shape ``(n,)`` segment labels.
        champion: shape ``(n,)`` scores of the week's default model.
        constant: regression: the champion's training-median label (None for classification).
        challengers: scenario name -> ``(challenger scores, champion scores)`` shape ``(n,)`` each
            (the A/A scenario has its own champion, the other retrain).
        deltas: scenario name -> population primary difference (AP, or relative MAE).
    """

    week: str
    labels: np.ndarray
    values: np.ndarray
    slices: dict[str, np.ndarray]
    champion: np.ndarray
    constant: float | None
    challengers: dict[str, tuple[np.ndarray, np.ndarray]]
    deltas: dict[str, float]

    @property
    def n(self) -> int:
        return int(self.labels.size)


def primary_delta(
    regression: bool, challenger: np.ndarray, champion: np.ndarray, labels: np.ndarray
) -> float:
    """The gate's primary difference on the whole sample: ``AP(a) - AP(b)`` (classification) or
    ``(MAE(a) - MAE(b)) / MAE(b)`` (regression)."""
    if regression:
        a = regression_point_metrics(challenger, labels)["mae"]
        b = regression_point_metrics(champion, labels)["mae"]
        return a / b - 1.0
    a = classification_point_metrics(challenger, labels)["average_precision"]
    b = classification_point_metrics(champion, labels)["average_precision"]
    return a - b


def _solve(shift: Callable[[float], float], target: float, high: float) -> float:
    """The ``x`` in ``[0, high]`` with ``shift(x) = target`` (``shift`` increasing from below
    ``target`` at 0; ``high`` doubled until it passes ``target``).

    Raises:
        ValueError: ``target`` cannot be reached (the base is already past it, or never gets there).
    """
    if shift(0.0) > target:
        raise ValueError(f"the base is already past the target {target:+.4f}")
    for _ in range(30):
        if shift(high) >= target:
            return float(brentq(lambda x: shift(x) - target, 0.0, high, xtol=1e-10))
        high *= 2
    raise ValueError(f"target {target:+.4f} not reached")


def _degraded(
    regression: bool,
    champion: np.ndarray,
    labels: np.ndarray,
    harm: float,
    z: np.ndarray,
    bounds: tuple[float, float],
) -> np.ndarray:
    """``champion`` plus noise ``σ·z`` whose population harm (``-ΔAP`` or relative MAE rise)
    equals ``harm``; on the logit (classification) or the prediction, clipped to ``bounds``."""
    if regression:
        scale = float(np.mean(np.abs(champion - labels)))

        def noisy(sigma: float) -> np.ndarray:
            return np.clip(champion + sigma * scale * z, *bounds)
    else:
        base = logit(np.clip(champion, 1e-9, 1 - 1e-9))

        def noisy(sigma: float) -> np.ndarray:
            return np.asarray(expit(base + sigma * z))

    sign = 1.0 if regression else -1.0

    def damage(sigma: float) -> float:
        return sign * primary_delta(regression, noisy(sigma), champion, labels)

    return noisy(_solve(damage, harm, 1.0))


def _improved(
    regression: bool, base: np.ndarray, champion: np.ndarray, labels: np.ndarray, gain: float
) -> np.ndarray:
    """A challenger whose population gain over ``champion`` (``ΔAP`` or the relative MAE fall)
    equals ``gain``: ``base + t (labels - base)`` with ``t`` in [0, 1] when ``base`` gains less
    than ``gain``, else the blend ``champion + t (base - champion)``."""
    y = labels.astype(np.float64)
    sign = -1.0 if regression else 1.0

    def moved(t: float) -> np.ndarray:
        return base + min(t, 1.0) * (y - base)

    def better(t: float) -> float:
        return sign * primary_delta(regression, moved(t), champion, labels)

    if better(0.0) <= gain:
        return moved(_solve(better, gain, 0.25))

    # The retrain alone is already better by more than ``gain``: blend it with the champion.
    def blended(t: float) -> np.ndarray:
        return champion + t * (base - champion)

    t = brentq(
        lambda t: sign * primary_delta(regression, blended(t), champion, labels) - gain,
        0.0,
        1.0,
        xtol=1e-10,
    )
    return blended(float(t))


def valid_weeks(replay: Replay) -> list[str]:
    """The weeks whose training has a full cutoff plan (history long enough, evaluation matured)."""
    out = []
    for week in replay.weeks:
        try:
            replay.plan(week)
        except TrainingDataError:
            continue
        out.append(week)
    return out


def promotion_weeks(replay: Replay, count: int) -> list[str]:
    """``count`` weeks spread evenly over :func:`valid_weeks` (first and last included)."""
    weeks = valid_weeks(replay)
    if not weeks:
        raise ValueError(f"{replay.usecase_name}: no week has a full cutoff plan")
    picks = np.unique(np.linspace(0, len(weeks) - 1, max(count, 1)).round().astype(int))
    return [weeks[i] for i in picks]


def build_population(
    replay: Replay, week: str, seed: int, scenarios: Sequence[Scenario] = SCENARIOS
) -> Population:
    """The real evaluation set of ``week``'s training and every scenario's challenger.

    Args:
        scenarios: the challengers to build (``identical`` is always built).
        seed: seeds the degradation noise and the A/A retrains (``seed + 1``, ``seed + 2``).
    """
    usecase = replay.usecase
    regression = not usecase.is_classification
    trained = replay.train_at(week)
    ev = replay.evaluation(trained.plan.evaluations)
    champion = replay.predict(trained, ev.rows)

    def retrained(offset: int) -> np.ndarray:
        model = replay.train_at(week, seed=seed + offset, tunable=SUBSAMPLED)
        return replay.predict(model, ev.rows)

    low = usecase.label.minimum if usecase.label.minimum is not None else -np.inf
    high = usecase.label.maximum if usecase.label.maximum is not None else np.inf
    z = np.random.default_rng([seed, 7]).standard_normal(ev.n)
    gain = BETTER_MAE_SHARE if regression else BETTER_AP
    names = {s.name for s in scenarios}
    challengers = {"identical": (champion.copy(), champion)}
    if "retrain" in names:
        challengers["retrain"] = (retrained(2), retrained(1))
    if "better" in names:
        better = _improved(regression, retrained(2), champion, ev.labels, gain)
        challengers["better"] = (better, champion)
    for s in scenarios:
        if s.kind == "worse":
            harm = s.margins * (HARM_MAE_SHARE if regression else HARM_AP)
            scores = _degraded(regression, champion, ev.labels, harm, z, (low, high))
            challengers[s.name] = (scores, champion)
    deltas = {
        name: primary_delta(regression, chal, champ, ev.labels)
        for name, (chal, champ) in challengers.items()
    }
    return Population(
        week,
        ev.labels,
        ev.values,
        ev.slices,
        champion,
        trained.training_median,
        challengers,
        deltas,
    )


# --- replicas ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """One simulated gate decision: promoted, reason code, and whether the CI covered ``Δ``
    (None when the gate stopped before the primary check)."""

    promoted: bool
    reason_code: str
    covered: bool | None


def _decide(
    replay: Replay, pop: Population, name: str, idx: np.ndarray, policy: GatePolicy
) -> GateDecision:
    chal, champ = pop.challengers[name]
    return replay.gate(chal, champ, pop, policy, constant=pop.constant, pick=idx)


def _outcome(decision: GateDecision, delta: float) -> Outcome:
    try:
        primary = decision.check("primary_non_inferiority")
    except KeyError:
        covered = None
    else:
        covered = (
            primary.ci_low is not None
            and primary.ci_high is not None
            and (primary.ci_low - _TOLERANCE <= delta <= primary.ci_high + _TOLERANCE)
        )
    return Outcome(decision.passed, decision.reason_code, covered)


# --- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScenarioResult:
    """The simulated decisions on one challenger, pooled over the promotion weeks.

    Attributes:
        scenario: the challenger.
        deltas: promotion week -> population primary difference.
        outcomes: one per replica (all weeks).
    """

    scenario: Scenario
    deltas: dict[str, float]
    outcomes: tuple[Outcome, ...]

    def promoted(self, confidence: float = REPORT_CONFIDENCE) -> Rate:
        return Rate.of(sum(o.promoted for o in self.outcomes), len(self.outcomes), confidence)

    def coverage(self, confidence: float = REPORT_CONFIDENCE) -> Rate | None:
        judged = [o.covered for o in self.outcomes if o.covered is not None]
        return Rate.of(sum(judged), len(judged), confidence) if judged else None

    def insufficient(self, confidence: float = REPORT_CONFIDENCE) -> Rate:
        k = sum(o.reason_code == "insufficient_evidence" for o in self.outcomes)
        return Rate.of(k, len(self.outcomes), confidence)

    def rejects(self) -> dict[str, int]:
        """Reason code -> count of rejects."""
        return dict(Counter(o.reason_code for o in self.outcomes if not o.promoted))


@dataclass(frozen=True)
class GateSimulation:
    """The gate's measured error rates on one use case (see the module docstring).

    Attributes:
        usecase: the use case's name.
        task: ``binary_classification`` or ``regression``.
        policy: the policy simulated.
        weeks: the promotion weeks; ``replicas``: replicas per week and challenger.
        results: one per challenger simulated.
        evidence: over the real replay weeks, the share whose evaluation set is below the policy's
            minimum evidence; ``evidence_weeks`` how many weeks were counted.
        seconds_per_gate: mean wall time of one ``evaluate_gate`` call (seconds).
        seed: the simulation's seed.
    """

    usecase: str
    task: str
    policy: GatePolicy
    weeks: tuple[str, ...]
    replicas: int
    results: tuple[ScenarioResult, ...]
    evidence: Rate
    seconds_per_gate: float
    seed: int
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def result(self, name: str) -> ScenarioResult:
        """The result of scenario ``name``. Raises KeyError when it was not simulated."""
        for r in self.results:
            if r.scenario.name == name:
                return r
        raise KeyError(name)

    def pooled_coverage(self, confidence: float = REPORT_CONFIDENCE) -> Rate | None:
        """Coverage of the population ``Δ`` over every non-identical challenger's replicas."""
        judged = [
            o.covered
            for r in self.results
            if r.scenario.name != "identical"
            for o in r.outcomes
            if o.covered is not None
        ]
        return Rate.of(sum(judged), len(judged), confidence) if judged else None

    def _target(self, scenario: Scenario) -> str:
        """The population difference a challenger was built to have, in words."""
        if scenario.kind == "worse":
            if self.regression:
                return f"MAE +{scenario.margins * HARM_MAE_SHARE:.0%}"
            return f"AP -{scenario.margins * HARM_AP:.3g}"
        if scenario.name == "better":
            return f"MAE -{BETTER_MAE_SHARE:.0%}" if self.regression else f"AP +{BETTER_AP}"
        return ""

    def sentences(self) -> dict[str, str]:
        """Scenario name -> "this gate rule promotes a model worse by the margin in 3.1% [2.0,
        4.6] of simulated cases (6/194)"."""
        out = {}
        for r in self.results:
            rate = r.promoted()
            pct = f"{rate.rate:.1%} [{100 * rate.ci_low:.1f}, {100 * rate.ci_high:.1f}]"
            target = f" ({t})" if (t := self._target(r.scenario)) else ""
            out[r.scenario.name] = (
                f"this gate rule promotes a model {r.scenario.label}{target} in {pct} of simulated "
                f"cases ({rate.k}/{rate.n})"
            )
        return out

    def table(self) -> str:
        """A Markdown table: one row per challenger."""
        unit = "relative MAE" if self.regression else "AP"
        lines = [
            f"| challenger | population Δ {unit} (per week) | promoted | CI coverage of Δ | "
            "not enough evidence | rejects by reason |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.results:
            deltas = ", ".join(f"{d:+.4f}" for d in r.deltas.values())
            cov = r.coverage()
            rejects = ", ".join(f"{k} {v}" for k, v in sorted(r.rejects().items())) or "-"
            lines.append(
                f"| {r.scenario.label} | {deltas} | {r.promoted().text()} | "
                f"{cov.text() if cov else '-'} | {r.insufficient().text()} | {rejects} |"
            )
        return "\n".join(lines) + "\n"

    def check_bounds(self, confidence: float = CHECK_CONFIDENCE) -> list[str]:
        """The documented bounds this simulation statistically violates (empty when none)."""
        problems = []
        for r in self.results:
            rate = r.promoted(confidence)
            if r.scenario.kind == "worse" and rate.above(MAX_FALSE_PROMOTION):
                problems.append(
                    f"{self.usecase}: false promotion of a model {r.scenario.label} is "
                    f"{rate.text()}, above {MAX_FALSE_PROMOTION:.0%} at {confidence:.0%} confidence"
                )
            if r.scenario.name == "better" and rate.below(MIN_POWER):
                problems.append(
                    f"{self.usecase}: power for a truly better model is {rate.text()}, below "
                    f"{MIN_POWER:.0%} at {confidence:.0%} confidence"
                )
        cov = self.pooled_coverage(confidence)
        if cov is not None and cov.below(MIN_COVERAGE):
            problems.append(
                f"{self.usecase}: coverage of the 95% interval is {cov.text()}, below "
                f"{MIN_COVERAGE:.0%} at {confidence:.0%} confidence"
            )
        return problems

    def record(self) -> dict:
        """A JSON-ready mapping of every figure (rates as :meth:`Rate.as_dict`)."""
        sentences = self.sentences()
        cov = self.pooled_coverage()
        return {
            "usecase": self.usecase,
            "task": self.task,
            "created": self.created,
            "seed": self.seed,
            "weeks": list(self.weeks),
            "replicas_per_week": self.replicas,
            "seconds_per_gate": round(self.seconds_per_gate, 4),
            "policy": policy_fields(self.policy, self.task),
            "evidence_shortfall_real_weeks": self.evidence.as_dict(),
            "coverage_pooled": cov.as_dict() if cov else None,
            "scenarios": {
                r.scenario.name: {
                    "label": r.scenario.label,
                    "kind": r.scenario.kind,
                    "target": self._target(r.scenario),
                    "population_delta": {w: round(d, 6) for w, d in r.deltas.items()},
                    "promoted": r.promoted().as_dict(),
                    "coverage": (c.as_dict() if (c := r.coverage()) else None),
                    "insufficient_evidence": r.insufficient().as_dict(),
                    "rejects": r.rejects(),
                    "sentence": sentences[r.scenario.name],
                }
                for r in self.results
            },
            "violations": self.check_bounds(),
        }

    def measured_entry(self, command: str) -> dict:
        """The ``gate`` section entry of :mod:`registry_guard.measured` for this simulation."""
        rec = self.record()
        return {
            "section": GATE_SECTION,
            "policy": rec["policy"],
            "command": command,
            "date": self.created,
            "replicas_per_week": self.replicas,
            "weeks": list(self.weeks),
            "sentences": list(self.sentences().values()),
            "rates": {
                name: {"sentence": s["sentence"], **s["promoted"]}
                for name, s in rec["scenarios"].items()
            },
            "coverage_pooled": rec["coverage_pooled"],
            "evidence_shortfall_real_weeks": rec["evidence_shortfall_real_weeks"],
        }


# --- the entry point -----------------------------------------------------------------------------
def evidence_shortfall(replay: Replay, policy: GatePolicy, weeks: Sequence[str]) -> Rate:
    """Share of ``weeks`` whose real evaluation set is below the policy's minimum evidence
    (rows, and positives for classification): the gate's "not enough evidence" rate in real use."""
    tp = policy.for_task(replay.usecase.task)
    short = 0
    for week in weeks:
        ev = replay.evaluation(replay.plan(week).evaluations)
        if isinstance(tp, ClassificationGatePolicy):
            short += ev.n < tp.min_rows or int(ev.labels.sum()) < tp.min_positives
        else:
            short += ev.n < tp.min_rows
    return Rate.of(short, len(weeks), REPORT_CONFIDENCE)


def simulate_gate(
    replay: Replay,
    policy: GatePolicy,
    *,
    replicas: int,
    weeks: int | Sequence[str] = 3,
    seed: int = 20261203,
    scenarios: Sequence[str] | None = None,
) -> GateSimulation:
    """Measure the gate's error rates on ``replay``'s real evaluation sets (module docstring).

    Args:
        replay: the use case's history (its trained models are cached and shared).
        policy: the gate policy to judge (its task section applies).
        replicas: resampled evaluation sets per promotion week and challenger.
        weeks: how many promotion weeks (spread by :func:`promotion_weeks`), or the weeks.
        seed: seeds the replicas, the degradation noise and the A/A retrains.
        scenarios: names from :data:`SCENARIOS` (default: all).

    Returns:
        :class:`GateSimulation` with ``len(weeks) * replicas`` decisions per challenger.

    Raises:
        ValueError: ``replicas`` is not positive, an unknown scenario, or a target difference that
            cannot be constructed on a week.
    """
    if replicas <= 0:
        raise ValueError(f"replicas must be positive, got {replicas}")
    chosen = [_BY_NAME[n] for n in (scenarios or _BY_NAME)]
    picked = promotion_weeks(replay, weeks) if isinstance(weeks, int) else list(weeks)
    outcomes: dict[str, list[Outcome]] = {s.name: [] for s in chosen}
    deltas: dict[str, dict[str, float]] = {s.name: {} for s in chosen}
    calls, elapsed = 0, 0.0
    for w, week in enumerate(picked):
        pop = build_population(replay, week, seed, chosen)
        rng = np.random.default_rng([seed, w])
        for _ in range(replicas):
            idx = rng.integers(0, pop.n, pop.n)
            for s in chosen:
                start = time.perf_counter()
                decision = _decide(replay, pop, s.name, idx, policy)
                elapsed += time.perf_counter() - start
                calls += 1
                outcomes[s.name].append(_outcome(decision, pop.deltas[s.name]))
        for s in chosen:
            deltas[s.name][week] = pop.deltas[s.name]
    results = tuple(ScenarioResult(s, deltas[s.name], tuple(outcomes[s.name])) for s in chosen)
    return GateSimulation(
        usecase=replay.usecase_name,
        task=replay.usecase.task.value,
        policy=policy,
        weeks=tuple(picked),
        replicas=replicas,
        results=results,
        evidence=evidence_shortfall(replay, policy, valid_weeks(replay)),
        seconds_per_gate=elapsed / max(calls, 1),
        seed=seed,
    )
