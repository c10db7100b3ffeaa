"""The retrain trigger replayed over a use case's real history: how often each candidate rule
fires, and whether the retrain it caused gave a challenger the gate's interval shows is better.

Set-up (see ``docs/decisions.md``, retrain trigger):

- The replay starts where the demo bootstraps its first champion (the fewest leading weeks from
  which the cutoff plan is complete, :func:`first_week`); that week's challenger is the first
  champion of every rule.
- Every later ISO week ``w`` each rule looks at the *current* champion (its own history: rules
  promote different challengers) and at the evidence the product would have that week:

  * ``today``: the product's :func:`pipeline.decisions.decide_retrain` with the champion's age and
    the share of drifted features since its evaluation cutoff
    (:func:`monitoring.compute.drift_share`, Evidently 0.7, the monitor step's sample and seed);
  * ``drift_share``: that share alone against a threshold;
  * ``weighted_drift``: the same per-feature Evidently verdicts weighted by the champion booster's
    total-gain importance (:func:`importance_weighted_share`);
  * ``score_psi``: the PSI of the champion's scores on this week's scoring rows against its scores
    on its evaluation rows (:func:`domain.metrics.population_stability_index`, Siddiqi 2006);
  * ``performance``: classification: the drop of the champion's average precision estimated
    before labels mature by confidence-based performance estimation
    (:func:`estimated_average_precision`, NannyML's CBPE); regression (labels
    known at once): the realized relative MAE increase on the newest ingested week;
  * ``cadence``: every ``k`` weeks since the rule last fired;
  * ``age``: the champion-age rule alone (older than ``k`` weeks).

- When a rule fires, the challenger of ``w`` (:meth:`simulation.replay.Replay.train_at`; the same
  model whatever the trigger history, so every rule is replayed counterfactually over the same
  models) is gated against the rule's champion by the real :func:`registry_guard.gate.evaluate_gate`
  on that challenger's evaluation rows. "Improved" means the gate's interval shows the challenger
  better: classification, the CI lower bound of ΔAP above 0; regression, the CI upper bound of the
  relative ΔMAE below 0. On ``promote`` the rule's champion changes.
- Champion quality: the average precision (MAE) of each rule's champion on every week's scoring
  rows whose label matured inside the history, averaged over those weeks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, mean_absolute_error

from domain.evaluation import TrainingDataError, plan_cutoffs
from domain.metrics import population_stability_index
from monitoring import compute
from pipeline.decisions import decide_retrain
from registry_guard.gate import GateDecision
from registry_guard.policy import GatePolicy
from rollguard.weeks import parse_iso_week
from simulation.rates import Rate
from simulation.replay import Replay, Trained

Signal = Literal[
    "today", "drift_share", "weighted_drift", "score_psi", "performance", "cadence", "age"
]

#: The bound the chosen default is held to: at least this share of its retrains must give a
#: challenger the gate's interval shows better (issue 18).
IMPROVED_BOUND = 0.5


@dataclass(frozen=True)
class Rule:
    """A candidate retrain trigger.

    Attributes:
        name: label in tables (e.g. ``score_psi>0.10``).
        signal: which evidence it reads (see the module docstring).
        threshold: fire when the signal is above it (shares in [0, 1], PSI, AP drop in AP points,
            relative MAE increase); weeks for ``cadence`` and ``age``; for ``today`` the drift
            threshold handed to :func:`pipeline.decisions.decide_retrain`.
        max_age_weeks: ``today`` only: the champion-age limit.
    """

    name: str
    signal: Signal
    threshold: float
    max_age_weeks: int = 8


#: The rules of the full run (``benchmarks/bench_decisions.py``).
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("product (age>26 or drift>0.5)", "today", 0.5, 26),
    Rule("before (age>8 or drift>0.5)", "today", 0.5, 8),
    Rule("drift_share>0.5", "drift_share", 0.5),
    Rule("weighted_drift>0.5", "weighted_drift", 0.5),
    Rule("score_psi>0.10", "score_psi", 0.10),
    Rule("score_psi>0.25", "score_psi", 0.25),
    Rule("performance>0.02", "performance", 0.02),
    Rule("performance>0.05", "performance", 0.05),
    Rule("cadence 1 week", "cadence", 1),
    Rule("cadence 4 weeks", "cadence", 4),
    Rule("cadence 8 weeks", "cadence", 8),
    Rule("age>8", "age", 8),
)

#: The rule the product uses (chosen from the measured figures, ``docs/decisions.md``).
DEFAULT_RULE = DEFAULT_RULES[0].name
#: The rule that retrains every week (the bad rule the bound must catch on CDNOW).
EVERY_WEEK = Rule("cadence 1 week", "cadence", 1)


@dataclass(frozen=True)
class Retrain:
    """One firing of a rule and what the gate said about the challenger it caused.

    Attributes:
        week: ISO week the rule fired (the challenger's newest ingested week).
        champion_week: the week whose challenger was champion when it fired.
        reason: the evidence, one sentence.
        outcome: the gate's outcome (``promote`` or ``reject``).
        difference: ΔAP (challenger - champion, AP points) or relative ΔMAE (share); None when the
            gate stopped before its primary check.
        ci_low, ci_high: the gate's interval of ``difference`` (None likewise).
        improved: the interval shows the challenger better.
    """

    week: str
    champion_week: str
    reason: str
    outcome: str
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    improved: bool


@dataclass(frozen=True)
class RuleResult:
    """One rule's replay.

    Attributes:
        rule: the rule.
        weeks: weeks judged (after the first champion).
        retrains: every firing, oldest first.
        quality: mean champion AP (classification) or MAE (regression, label unit) on the matured
            weekly scoring rows; None when no week matured.
        quality_weeks: weeks behind ``quality``.
    """

    rule: Rule
    weeks: int
    retrains: tuple[Retrain, ...]
    quality: float | None
    quality_weeks: int

    @property
    def fires(self) -> int:
        return len(self.retrains)

    @property
    def improved(self) -> Rate | None:
        """Share of retrains whose challenger the gate's interval shows better (None: no fire)."""
        if not self.retrains:
            return None
        return Rate.of(sum(r.improved for r in self.retrains), len(self.retrains))

    @property
    def false_triggers(self) -> Rate | None:
        """Share of retrains whose challenger was not shown better (None: no fire)."""
        if not self.retrains:
            return None
        return Rate.of(sum(not r.improved for r in self.retrains), len(self.retrains))

    @property
    def promotions(self) -> int:
        return sum(r.outcome == "promote" for r in self.retrains)

    @property
    def gain_per_retrain(self) -> float | None:
        """Mean ``difference`` over the retrains (ΔAP, or relative ΔMAE: negative is better)."""
        diffs = [r.difference for r in self.retrains if r.difference is not None]
        return float(np.mean(diffs)) if diffs else None


@dataclass(frozen=True)
class TriggerSimulation:
    """Every rule replayed over one use case.

    Attributes:
        usecase: the use case's name.
        task: ``binary_classification`` or ``regression``.
        start_week: the first champion's week; ``end_week`` the last week judged.
        results: one per rule, in the order asked.
        default: name of the rule held to :data:`IMPROVED_BOUND` by :meth:`check_bounds`.
        seed: the seed of the estimates (CBPE draws).
        seconds: wall time of the simulation.
    """

    usecase: str
    task: str
    start_week: str
    end_week: str
    results: tuple[RuleResult, ...]
    default: str
    seed: int
    seconds: float = 0.0

    def result(self, name: str) -> RuleResult:
        """The result of rule ``name``.

        Raises:
            KeyError: no such rule in this simulation.
        """
        for r in self.results:
            if r.rule.name == name:
                return r
        raise KeyError(name)

    def check_bounds(self, rule: str | None = None) -> list[str]:
        """Violations of the documented bound by ``rule`` (default: :attr:`default`): its share of
        improving retrains is statistically below :data:`IMPROVED_BOUND` (the whole Clopper-Pearson
        interval is). Empty when held, or when the rule never fired (nothing to judge)."""
        result = self.result(rule or self.default)
        rate = result.improved
        if rate is not None and rate.below(IMPROVED_BOUND):
            return [
                f"{self.usecase}: rule {result.rule.name!r}: improved share {rate.text()} is "
                f"below {IMPROVED_BOUND:.0%}"
            ]
        return []

    def table(self) -> str:
        """Markdown table, one row per rule."""
        classification = self.task == "binary_classification"
        gain = "mean ΔAP" if classification else "mean rel. ΔMAE"
        quality = "champion AP" if classification else "champion MAE"
        lines = [
            f"| rule | fires | promoted | improved (95% CI) | false triggers | {gain} | {quality} |",
            "|---|---:|---:|---|---|---:|---:|",
        ]
        for r in self.results:
            imp = r.improved
            false = r.false_triggers
            g = r.gain_per_retrain
            lines.append(
                f"| {r.rule.name} | {r.fires}/{r.weeks} | {r.promotions} | "
                f"{'—' if imp is None else imp.text()} | "
                f"{'—' if false is None else false.text()} | "
                f"{'—' if g is None else (f'{g:+.4f}' if classification else f'{g:+.1%}')} | "
                f"{'—' if r.quality is None else f'{r.quality:.4f}'} |"
            )
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """JSON-ready record of the simulation (every firing with its gate interval)."""
        return {
            "usecase": self.usecase,
            "task": self.task,
            "start_week": self.start_week,
            "end_week": self.end_week,
            "default": self.default,
            "seed": self.seed,
            "seconds": round(self.seconds, 1),
            "bound": {"improved_share_at_least": IMPROVED_BOUND},
            "violations": self.check_bounds(),
            "rules": [
                {
                    "name": r.rule.name,
                    "signal": r.rule.signal,
                    "threshold": r.rule.threshold,
                    "weeks": r.weeks,
                    "fires": r.fires,
                    "promotions": r.promotions,
                    "improved": None if r.improved is None else r.improved.as_dict(),
                    "false_triggers": (
                        None if r.false_triggers is None else r.false_triggers.as_dict()
                    ),
                    "gain_per_retrain": r.gain_per_retrain,
                    "quality": r.quality,
                    "quality_weeks": r.quality_weeks,
                    "retrains": [dict(x.__dict__) for x in r.retrains],
                }
                for r in self.results
            ],
        }

    def json(self) -> str:
        return json.dumps(self.record(), indent=2, default=str)


def first_week(replay: Replay) -> str:
    """The week the first champion is trained: the fewest leading weeks whose cutoff plan is
    complete (as :func:`pipeline.demo.initial_weeks_needed` on the feed).

    Raises:
        TrainingDataError: the whole history is too short.
    """
    for week in replay.weeks:
        try:
            replay.plan(week)
        except TrainingDataError:
            continue
        return week
    raise TrainingDataError(f"the {replay.usecase_name} history is too short for a first champion")


def importance_weighted_share(
    drifted: Sequence[str], compared: Sequence[str], importance: dict[str, float]
) -> float | None:
    """Share of the model's importance carried by drifted features.

    Args:
        drifted: names of the features Evidently found drifted.
        compared: names of every feature compared (usable on both sides).
        importance: feature -> non-negative importance (e.g. XGBoost total gain); a feature the
            booster never split on has 0.

    Returns:
        ``sum(importance[drifted]) / sum(importance[compared])`` in [0, 1], or None when the
        compared features carry no importance.
    """
    total = sum(importance.get(f, 0.0) for f in compared)
    if total <= 0:
        return None
    return sum(importance.get(f, 0.0) for f in drifted) / total


def fit_calibrator(scores: np.ndarray, labels: np.ndarray) -> IsotonicRegression:
    """Isotonic calibration of a classifier's scores on labelled reference rows, the first step of
    confidence-based performance estimation (NannyML, "Confidence-based Performance Estimation
    (CBPE)", https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html:
    CBPE calibrates the reference scores with isotonic regression before it estimates).

    Args:
        scores: shape ``(n,)`` probabilities of the reference rows.
        labels: shape ``(n,)`` their 0/1 labels.
    """
    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)


def estimated_average_precision(
    scores: np.ndarray, calibrator: IsotonicRegression, *, seed: int, draws: int = 20
) -> float | None:
    """CBPE estimate of the average precision of ``scores`` before their labels are known.

    Each row's label is taken as Bernoulli with the calibrated probability of its score (CBPE's
    assumption: the calibrated score is the probability that the label is positive, and the
    relation of score to label does not change - no concept drift). The expected AP under that
    distribution has no closed form, so it is the mean AP over ``draws`` label vectors drawn with
    ``numpy.random.default_rng(seed)`` (draws without a positive are left out).

    Args:
        scores: shape ``(n,)`` probabilities of unlabelled rows.
        calibrator: :func:`fit_calibrator` on the reference rows.
        seed: seed of the label draws; draws: number of draws (>= 1).

    Returns:
        The estimated AP in [0, 1], or None when ``scores`` is empty or no draw had a positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return None
    probability = calibrator.predict(scores)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        labels = rng.random(scores.size) < probability
        if labels.any():
            values.append(average_precision_score(labels, scores))
    return float(np.mean(values)) if values else None


@dataclass
class _Evidence:
    """Per-(champion, week) evidence, computed once and shared by every rule (cached)."""

    replay: Replay
    seed: int
    _drift: dict[tuple[str, str], compute.DriftShare] = field(default_factory=dict)
    _scores: dict[tuple[str, date, bool], np.ndarray] = field(default_factory=dict)
    _gates: dict[tuple[str, str], GateDecision] = field(default_factory=dict)

    @property
    def classification(self) -> bool:
        return self.replay.usecase.is_classification

    def scoring_cutoff(self, week: str) -> date:
        """The Monday after ``week`` (the pipeline's scoring cutoff when it is the newest)."""
        return parse_iso_week(week) + timedelta(days=7)

    def scores(self, model: Trained, cutoff: date, *, labels: bool = False) -> np.ndarray:
        key = (model.week, cutoff, labels)
        if key not in self._scores:
            rows = self.replay.rows(cutoff, label_available=labels)
            self._scores[key] = self.replay.predict(model, rows)
        return self._scores[key]

    def reference_scores(self, model: Trained) -> np.ndarray:
        return np.concatenate([self.scores(model, c, labels=True) for c in model.plan.evaluations])

    def reference_labels(self, model: Trained) -> np.ndarray:
        return self.replay.evaluation(model.plan.evaluations).labels

    def drift(self, model: Trained, week: str) -> compute.DriftShare:
        """:func:`monitoring.compute.drift_share` of the week's scoring rows against the
        champion's evaluation rows, with the monitor step's sample cap and seed."""
        key = (model.week, week)
        if key not in self._drift:
            s = self.replay.settings
            reference = self.replay.evaluation(model.plan.evaluations).rows
            current = self.replay.rows(self.scoring_cutoff(week), label_available=False)
            self._drift[key] = compute.drift_share(
                reference,
                current,
                compute.ColumnMapping.from_usecase(self.replay.usecase),
                threshold=s.retrain_drift_threshold,
                sample_rows=s.monitor_sample_rows,
                seed=s.monitor_sample_seed,
            )
        return self._drift[key]

    def weighted_drift(self, model: Trained, week: str) -> float | None:
        drift = self.drift(model, week)
        compared = [
            f.feature
            for f in drift.result.figures
            if f.metric == "drifted" and f.state in ("ok", "drift")
        ]
        gains = model.model.booster.get_score(importance_type="total_gain")
        importance = {k: float(np.sum(v)) for k, v in gains.items()}
        return importance_weighted_share(drift.drifted, compared, importance)

    def score_psi(self, model: Trained, week: str) -> float:
        live = self.scores(model, self.scoring_cutoff(week))
        return population_stability_index(self.reference_scores(model), live, bins=10)

    def performance(self, model: Trained, week: str) -> float | None:
        """Classification: CBPE-estimated AP drop (reference estimate minus this week's);
        regression: realized relative MAE increase on the newest ingested week's rows."""
        ref_scores, ref_labels = self.reference_scores(model), self.reference_labels(model)
        if self.classification:
            calibrator = fit_calibrator(ref_scores, ref_labels)
            before = estimated_average_precision(ref_scores, calibrator, seed=self.seed)
            live = self.scores(model, self.scoring_cutoff(week))
            now = estimated_average_precision(live, calibrator, seed=self.seed)
            return None if before is None or now is None else before - now
        rows = self.replay.rows(parse_iso_week(week), label_available=True)
        labels = rows[self.replay.usecase.label.column].to_numpy(np.float64)
        if labels.size == 0:
            return None
        mae_now = mean_absolute_error(labels, self.scores(model, parse_iso_week(week), labels=True))
        mae_ref = mean_absolute_error(ref_labels, ref_scores)
        return float(mae_now / mae_ref - 1.0)

    def gate(self, challenger: Trained, champion: Trained, policy: GatePolicy) -> GateDecision:
        """The real gate: ``challenger`` against ``champion`` on the challenger's evaluation rows."""
        key = (challenger.week, champion.week)
        if key not in self._gates:
            ev = self.replay.evaluation(challenger.plan.evaluations)
            self._gates[key] = self.replay.gate(
                self.replay.predict(challenger, ev.rows),
                self.replay.predict(champion, ev.rows),
                ev,
                policy,
                constant=challenger.training_median,
                versions=(challenger.week, champion.week),
            )
        return self._gates[key]

    def quality(self, model: Trained, cutoff: date) -> float | None:
        rows = self.replay.rows(cutoff, label_available=True)
        labels = rows[self.replay.usecase.label.column].to_numpy(np.float64)
        if labels.size == 0 or (self.classification and not 0 < labels.sum() < labels.size):
            return None
        scores = self.scores(model, cutoff, labels=True)
        if self.classification:
            return float(average_precision_score(labels, scores))
        return float(mean_absolute_error(labels, scores))


def _signal(rule: Rule, ev: _Evidence, champion: Trained, week: str) -> float | None:
    """The value of a threshold rule's signal this week (None: not measurable)."""
    if rule.signal == "drift_share":
        return ev.drift(champion, week).share
    if rule.signal == "weighted_drift":
        return ev.weighted_drift(champion, week)
    if rule.signal == "score_psi":
        return ev.score_psi(champion, week)
    if rule.signal == "performance":
        return ev.performance(champion, week)
    raise ValueError(f"rule {rule.name!r}: signal {rule.signal!r} has no threshold value")


def _fires(
    rule: Rule, ev: _Evidence, champion: Trained, week: str, *, since_fire: int, age: int | None
) -> tuple[bool, str]:
    """Whether ``rule`` fires in ``week`` against ``champion``, and the evidence in words."""
    if rule.signal == "cadence":
        return since_fire >= rule.threshold, f"{since_fire} weeks since the last retrain"
    if rule.signal == "age":
        return age is not None and age > rule.threshold, f"champion {age} weeks old"
    if rule.signal == "today":
        drift = ev.drift(champion, week)
        decision = decide_retrain(
            has_champion=True,
            forced=False,
            guard_state=None,
            champion_age_weeks=age,
            max_champion_age_weeks=rule.max_age_weeks,
            drift_share=drift.share,
            drift_threshold=rule.threshold,
            drift_exceeded=drift.share is not None and drift.share > rule.threshold,
        )
        return decision.retrain, decision.detail
    value = _signal(rule, ev, champion, week)
    text = "not measured" if value is None else f"{value:.4f}"
    return value is not None and value > rule.threshold, f"{rule.signal} {text}"


def _retrain(
    ev: _Evidence, challenger: Trained, champion: Trained, policy: GatePolicy, reason: str
) -> Retrain:
    """Gate ``challenger`` against ``champion`` and read the interval of the primary check."""
    decision = ev.gate(challenger, champion, policy)
    primary = next((c for c in decision.checks if c.name == "primary_non_inferiority"), None)
    lo = None if primary is None else primary.ci_low
    hi = None if primary is None else primary.ci_high
    shown = (lo is not None and lo > 0) if ev.classification else (hi is not None and hi < 0)
    return Retrain(
        week=challenger.week,
        champion_week=champion.week,
        reason=reason,
        outcome=decision.outcome,
        difference=None if primary is None else primary.value,
        ci_low=lo,
        ci_high=hi,
        improved=shown,
    )


def _age(ev: _Evidence, champion: Trained, upto: list[str]) -> int | None:
    """Weeks of data time from the champion's evaluation cutoff to the current one (as
    :func:`pipeline.steps.decide_step`)."""
    s = ev.replay.settings
    try:
        now = plan_cutoffs(
            ev.replay.usecase, upto, n_fit=0, n_validation=0, horizon_days=s.horizon_days
        ).evaluation
    except TrainingDataError:
        return None
    return (now - champion.plan.evaluation).days // 7


def _replay_rule(
    rule: Rule, ev: _Evidence, policy: GatePolicy, weeks: list[str], start: int, end: int
) -> RuleResult:
    """One rule from the first champion (week ``weeks[start]``) to ``weeks[end]``."""
    replay = ev.replay
    champion = replay.train_at(weeks[start])
    last_fire = start
    retrains: list[Retrain] = []
    quality: list[float] = []
    history_end = parse_iso_week(weeks[-1]) + timedelta(days=7)
    for i in range(start + 1, end + 1):
        week = weeks[i]
        fired, reason = _fires(
            rule,
            ev,
            champion,
            week,
            since_fire=i - last_fire,
            age=_age(ev, champion, weeks[: i + 1]),
        )
        if fired:
            last_fire = i
            retrain = _retrain(ev, replay.train_at(week), champion, policy, reason)
            retrains.append(retrain)
            if retrain.outcome == "promote":
                champion = replay.train_at(week)
        cutoff = ev.scoring_cutoff(week)
        if cutoff + timedelta(days=replay.settings.horizon_days) <= history_end:
            q = ev.quality(champion, cutoff)
            if q is not None:
                quality.append(q)
    return RuleResult(
        rule=rule,
        weeks=end - start,
        retrains=tuple(retrains),
        quality=float(np.mean(quality)) if quality else None,
        quality_weeks=len(quality),
    )


def simulate_triggers(
    replay: Replay,
    policy: GatePolicy,
    *,
    rules: Sequence[Rule] = DEFAULT_RULES,
    default: str = DEFAULT_RULE,
    start_week: str | None = None,
    end_week: str | None = None,
    seed: int = 0,
) -> TriggerSimulation:
    """Replay every rule over ``replay``'s history (see the module docstring).

    Args:
        replay: the use case's history (its cached rows and models are reused).
        policy: the gate policy (``registry_guard.policy.load_policy()`` for the default).
        rules: the rules to replay; ``default`` must be among them.
        default: the rule :meth:`TriggerSimulation.check_bounds` holds to :data:`IMPROVED_BOUND`.
        start_week: the first champion's week (default :func:`first_week`).
        end_week: the last week judged (default the history's last).
        seed: seed of the CBPE label draws.

    Returns:
        A :class:`TriggerSimulation`.

    Raises:
        ValueError: ``default`` is not among ``rules``, or ``end_week`` is not after
            ``start_week``.
        domain.evaluation.TrainingDataError: the history is too short for a first champion.
    """
    clock = time.perf_counter()
    if default not in {r.name for r in rules}:
        raise ValueError(f"default rule {default!r} is not among the rules replayed")
    weeks = replay.weeks
    start = weeks.index(start_week or first_week(replay))
    end = weeks.index(end_week) if end_week else len(weeks) - 1
    if end <= start:
        raise ValueError(f"end week {weeks[end]} is not after the start week {weeks[start]}")
    ev = _Evidence(replay, seed)
    results = tuple(_replay_rule(rule, ev, policy, weeks, start, end) for rule in rules)
    return TriggerSimulation(
        usecase=replay.usecase_name,
        task=replay.usecase.task.value,
        start_week=weeks[start],
        end_week=weeks[end],
        results=results,
        default=default,
        seed=seed,
        seconds=time.perf_counter() - clock,
    )
