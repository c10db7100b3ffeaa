"""The validation gate: a pure function from scores on the same evaluation rows to a decision.

Method
------
Challenger and champion are compared on the *same* out-of-time evaluation rows with the paired
percentile bootstrap of :func:`domain.metrics.paired_bootstrap` (Efron & Tibshirani 1993, ch. 13;
the one implementation the guard uses too). The metrics depend on the use case's task type
(:class:`rollguard.usecase.TaskType`):

* **binary classification** — primary average precision with an *absolute* non-inferiority margin:
  promote when the CI lower bound of ``AP(challenger) - AP(champion)`` is above ``-margin``
  (default 0.01); guardrails ROC AUC, Brier score and lift at the targeting budget; minimum
  evidence in rows and positives.
* **regression** — primary MAE with a *relative* margin: promote when the CI upper bound of
  ``(MAE(challenger) - MAE(champion)) / MAE(champion)`` is below ``margin`` (default 0.05);
  guardrails RMSE (relative) and bias (``|mean(pred - label)|`` may grow by at most a share of the
  champion's MAE); scores finite and within the label's declared bounds; minimum evidence in rows.

Both: two equally good models pass, so the fresher one wins ties (identical models give a CI of
exactly ``[0, 0]``); batch latency, model size and signature guardrails; the same
non-inferiority check on every segment of every slice with enough evidence. Without a champion the
challenger is compared with a constant model (the base rate; for regression its training median, else
the evaluation labels' median) and
becomes the first champion (``bootstrap``) when it is credibly better.

:func:`evaluate_gate` composes named checks (:func:`_sanity`, :func:`_signature`,
:func:`_evidence`, :func:`_model_size`, :func:`_champion_scores`, :func:`_better_than_constant`,
:func:`_primary`, :func:`_guardrails`, :func:`_slices`), each returning :class:`Check` rows and the
failures they found.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from domain.metrics import (
    BOOTSTRAP_METRICS,
    PairedComparison,
    lift_at_budget,
    multiplicities,
    paired_bootstrap,
    resample_indices,
    targeted_mask,
    value_share_at_budget,
    weighted_metrics,
)
from registry_guard.policy import (
    ClassificationGatePolicy,
    GatePolicy,
    RegressionGatePolicy,
)
from rollguard.usecase import LabelSpec, TaskType

__all__ = [
    "BOOTSTRAP_METRICS",
    "Check",
    "ChampionUnavailable",
    "GateDecision",
    "ModelEvidence",
    "PairedComparison",
    "evaluate_gate",
    "lift_at_budget",
    "multiplicities",
    "paired_bootstrap",
    "resample_indices",
    "targeted_mask",
    "value_share_at_budget",
    "weighted_metrics",
]

Outcome = Literal["promote", "reject", "bootstrap"]
Verdict = Literal["pass", "fail", "skip", "info"]


# --- inputs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEvidence:
    """What the gate knows about one model.

    Attributes:
        scores: shape ``(n,)``, one score per evaluation row: the probability of the positive
            class in [0, 1] (binary classification) or the predicted label value in the label's
            unit (regression).
        version: registry version, for the report.
        latency_seconds_per_10k: batch scoring time in seconds per 10,000 rows, or None if unmeasured.
        size_bytes: size of the stored model in bytes, or None if unknown.
        feature_names: input names of the model's signature, or None if it has no signature.
    """

    scores: np.ndarray
    version: str | None = None
    latency_seconds_per_10k: float | None = None
    size_bytes: int | None = None
    feature_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ChampionUnavailable:
    """There is a champion, but it could not be loaded or scored (never read as "no champion")."""

    version: str | None
    reason: str


# --- outputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One check of the gate.

    Attributes:
        name: stable identifier (``primary_non_inferiority``, ``guardrail_roc_auc``, ...).
        verdict: ``pass``/``fail``; ``skip`` when it could not be judged (reason in ``detail``);
            ``info`` for reported, non-judged quantities.
        value: the judged quantity (a difference ``challenger - champion``, a ratio, a count).
        threshold: the limit ``value`` is compared with, per ``rule``.
        rule: the rule in words.
        ci_low, ci_high: paired-bootstrap CI of ``value`` where relevant.
        challenger, champion: the metric of each model on the full evaluation set.
        detail: readable explanation of the verdict.
    """

    name: str
    verdict: Verdict
    rule: str
    value: float | None = None
    threshold: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    challenger: float | None = None
    champion: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class GateDecision:
    """The frozen result of :func:`evaluate_gate`.

    Attributes:
        outcome: ``promote``, ``reject``, or ``bootstrap`` (no champion; the challenger becomes it).
        reason_code: the main reason — ``non_inferior``, ``no_champion``, ``invalid_scores``,
            ``signature_mismatch``, ``insufficient_evidence``, ``model_too_large``,
            ``champion_unavailable``, ``inferior``, ``guardrail_failed``, ``slice_regressed``,
            ``worse_than_random`` (classification), ``worse_than_constant`` (regression).
        reasons: readable sentences, one per failed (or decisive) check.
        checks: every check with value, CI, threshold and verdict.
        n_rows, n_positives: size of the evaluation set (``n_positives`` is None for
            regression).
        task: the task type's value (``binary_classification`` or ``regression``).
        unit: the label's unit for regression reports (``EUR``); empty for classification.
        policy: the policy used (as a plain mapping).
        measured_error_rates: the policy's error rates measured by simulation on the use case's
            real data (:func:`registry_guard.measured.gate_error_rates`: ``status``, ``sentences``
            and ``rates``, or ``status`` ``not_measured`` and a ``reason``); attached by the caller
            that knows the use case (:func:`registry_guard.registry.run_gate`), None from
            :func:`evaluate_gate` itself.
    """

    outcome: Outcome
    reason_code: str
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    n_rows: int
    n_positives: int | None
    challenger_version: str | None
    champion_version: str | None
    policy: dict = field(hash=False, compare=False)
    task: str = TaskType.BINARY_CLASSIFICATION.value
    unit: str = ""
    measured_error_rates: dict | None = field(default=None, hash=False, compare=False)

    @property
    def passed(self) -> bool:
        """True when the challenger may become champion (``promote`` or ``bootstrap``)."""
        return self.outcome in ("promote", "bootstrap")

    def check(self, name: str) -> Check:
        """The check called ``name``. Raises KeyError when absent."""
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict:
        """A JSON-ready mapping of the whole decision."""
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        data["reasons"] = list(self.reasons)
        return _finite(data)

    def to_json(self) -> str:
        """The decision as an indented JSON document (NaN-free: missing values are null)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def to_markdown(self) -> str:
        """The decision as a Markdown report: outcome, reasons and a table of checks."""
        lines = [
            f"# Gate decision: **{self.outcome}** (`{self.reason_code}`)",
            "",
            f"- challenger version: {self.challenger_version or '-'}",
            f"- champion version: {self.champion_version or '-'}",
            f"- task: {self.task}" + (f" (unit {self.unit})" if self.unit else ""),
            f"- evaluation rows: {self.n_rows:,}"
            + (f", positives: {self.n_positives:,}" if self.n_positives is not None else ""),
            "",
            "## Reasons",
            "",
            *[f"- {r}" for r in self.reasons],
            "",
            "## Checks",
            "",
            "| check | verdict | value | CI | threshold | challenger | champion | rule |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            ci = f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]" if c.ci_low is not None else ""
            lines.append(
                f"| {c.name} | {c.verdict} | {_fmt(c.value)} | {ci} | {_fmt(c.threshold)} | "
                f"{_fmt(c.challenger)} | {_fmt(c.champion)} | {c.rule} |"
            )
        return "\n".join([*lines, *self._measured_lines()]) + "\n"

    def _measured_lines(self) -> list[str]:
        """The report's section on the rule's measured error rates (none when not attached)."""
        rates = self.measured_error_rates
        if rates is None:
            return []
        head = ["", "## Measured error rates of this gate rule", ""]
        if rates.get("status") != "measured":
            return [*head, f"- {rates.get('reason', 'not measured')}"]
        source = f"measured {rates.get('date', '?')} with `{rates.get('command', '?')}`"
        return [*head, *[f"- {s}" for s in rates.get("sentences", [])], "", source]


def _finite(obj):  # type: ignore[no-untyped-def]
    """Replace NaN and infinities by None so the report is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


# --- validated inputs ----------------------------------------------------------------------------
Failure = tuple[str, str]  # (reason code, readable sentence)


@dataclass(frozen=True)
class _Found:
    """What one named check found: its report rows and the failures (reason code, sentence)."""

    checks: tuple[Check, ...] = ()
    failures: tuple[Failure, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def _found(check: Check, failure: Failure | None = None) -> _Found:
    return _Found((check,), (failure,) if failure is not None else ())


@dataclass(frozen=True)
class _Rows:
    """The gate's inputs, validated: one entry per evaluation row in every array."""

    task: TaskType
    labels: np.ndarray  # int64 0/1 (classification) or float64 (regression)
    values: np.ndarray  # float64, the use case's money unit
    slices: dict[str, np.ndarray]  # slice name -> segment label per row (str)
    challenger: np.ndarray  # float64 scores
    label: LabelSpec | None
    budget: float
    constant: float | None = None  # regression: the challenger's training median

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def regression(self) -> bool:
        return self.task is TaskType.REGRESSION

    @property
    def n_positives(self) -> int | None:
        return None if self.regression else int(self.labels.sum())

    @property
    def unit(self) -> str:
        return self.label.unit if self.regression and self.label is not None else ""

    @property
    def bounds(self) -> tuple[float, float]:
        """Where scores must lie: [0, 1] for probabilities, the label's declared bounds else."""
        if not self.regression:
            return 0.0, 1.0
        low = None if self.label is None else self.label.minimum
        high = None if self.label is None else self.label.maximum
        return (-math.inf if low is None else low), (math.inf if high is None else high)

    def constant_model(self) -> np.ndarray:
        """Scores of the constant model a first champion must beat: the base rate (classification)
        or, for regression, the median label of the challenger's training rows (a constant one
        could have deployed instead), else the evaluation labels' median (the best constant for
        MAE in hindsight, a stricter bar)."""
        if not self.regression:
            return np.full(self.n, float(self.labels.mean()))
        fill = self.constant if self.constant is not None else float(np.median(self.labels))
        return np.full(self.n, fill)

    @property
    def constant_name(self) -> str:
        """How the regression constant is named in reasons."""
        return "training median" if self.constant is not None else "labels' median"


def _inputs(
    challenger: ModelEvidence,
    labels: np.ndarray,
    values: np.ndarray,
    slices: Mapping[str, np.ndarray],
    task: TaskType,
    label: LabelSpec | None,
    budget: float,
    constant: float | None = None,
) -> _Rows:
    task = TaskType(task)
    dtype = np.float64 if task is TaskType.REGRESSION else np.int64
    y = np.asarray(labels, dtype=dtype)
    n = y.shape[0]
    v = np.asarray(values, dtype=np.float64)
    segs = {str(k): np.asarray(s).astype(str) for k, s in slices.items()}
    if v.shape != (n,) or any(s.shape != (n,) for s in segs.values()):
        raise ValueError(f"labels, values and every slice must have shape ({n},)")
    scores = np.asarray(challenger.scores, dtype=np.float64)
    return _Rows(task, y, v, segs, scores, label, budget, constant)


def _pct(policy: GatePolicy) -> str:
    return f"{policy.confidence:.0%}"


def _money(x: float, unit: str) -> str:
    return f"{x:,.2f} {unit}".rstrip()


# --- the checks ------------------------------------------------------------------------------------
def _score_problem(scores: np.ndarray, rows: _Rows) -> str | None:
    """Why ``scores`` cannot be judged (wrong shape, NaN, infinite, out of bounds), or None."""
    n = rows.n
    if scores.shape != (n,):
        return f"expected {n} scores, got shape {scores.shape}"
    low, high = rows.bounds
    n_nan = int(np.isnan(scores).sum())
    if not rows.regression:
        n_out = int(((scores < low) | (scores > high)).sum())
        if n_nan or n_out:
            return f"{n_nan} NaN and {n_out} out-of-range (outside [0, 1]) scores of {n}"
        return None
    n_inf = int(np.isinf(scores).sum())
    finite = scores[np.isfinite(scores)]
    n_out = int(((finite < low) | (finite > high)).sum())
    if n_nan or n_inf or n_out:
        return (
            f"{n_nan} NaN, {n_inf} infinite and {n_out} out-of-range (outside the label's "
            f"bounds [{low:g}, {high:g}] {rows.unit}) scores of {n}"
        ).replace(" ]", "]")
    return None


def _sanity(rows: _Rows) -> _Found:
    """The challenger's scores are finite and in range (probabilities, or the label's bounds)."""
    bad = _score_problem(rows.challenger, rows)
    if rows.regression:
        low, high = rows.bounds
        rule = f"no NaN or infinite scores, all within [{low:g}, {high:g}] {rows.unit}".rstrip()
        ok = f"{rows.n} finite scores within [{low:g}, {high:g}]"
    else:
        rule, ok = "no NaN and all scores in [0, 1]", f"{rows.n} finite scores in [0, 1]"
    check = Check("scores_valid", "fail" if bad else "pass", rule, detail=bad or ok)
    return _found(
        check, ("invalid_scores", f"challenger scores are invalid: {bad}") if bad else None
    )


def _signature(challenger: ModelEvidence, expected_features: Sequence[str]) -> _Found:
    """The model's signature inputs equal the features the API serves, in order."""
    expected = tuple(expected_features)
    got = challenger.feature_names
    if got is None:
        detail = "the model has no signature"
    elif tuple(got) != expected:
        missing = [f for f in expected if f not in got]
        extra = [f for f in got if f not in expected]
        detail = (
            f"missing {missing}, unexpected {extra}"
            if missing or extra
            else "same features in a different order"
        )
    else:
        detail = ""
    check = Check(
        "signature_compatible",
        "fail" if detail else "pass",
        "signature inputs equal the features the API serves, in order",
        value=float(len(got or ())),
        threshold=float(len(expected)),
        detail=detail or f"{len(expected)} features match",
    )
    return _found(
        check, ("signature_mismatch", f"signature incompatible: {detail}") if detail else None
    )


def _evidence(rows: _Rows, tp: ClassificationGatePolicy | RegressionGatePolicy) -> _Found:
    """Enough evaluation rows (and, for classification, positives) to judge at all."""
    n, pos = rows.n, rows.n_positives
    if isinstance(tp, RegressionGatePolicy):
        enough = n >= tp.min_rows
        rule, detail = f"at least {tp.min_rows} rows", f"{n} rows"
        reason = f"not enough evidence: {n} rows; the policy needs at least {tp.min_rows} rows"
    else:
        assert pos is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
        enough = n >= tp.min_rows and pos >= tp.min_positives
        rule = f"at least {tp.min_rows} rows and {tp.min_positives} positives"
        detail = f"{n} rows, {pos} positives"
        reason = (
            f"not enough evidence: {n} rows and {pos} positives; the policy needs at least "
            f"{tp.min_rows} rows and {tp.min_positives} positives"
        )
    check = Check(
        "evidence",
        "pass" if enough else "fail",
        rule,
        value=float(n),
        threshold=float(tp.min_rows),
        detail=detail,
    )
    return _found(check, None if enough else ("insufficient_evidence", reason))


def _model_size(challenger: ModelEvidence, policy: GatePolicy) -> _Found:
    """The stored model is not larger than the policy allows."""
    rule = f"size <= {policy.max_model_bytes} bytes"
    size = challenger.size_bytes
    if size is None:
        return _found(Check("model_size", "skip", rule, detail="size unknown"))
    ok = size <= policy.max_model_bytes
    check = Check(
        "model_size",
        "pass" if ok else "fail",
        rule,
        value=float(size),
        threshold=float(policy.max_model_bytes),
        detail=f"{size:,} bytes",
    )
    reason = f"model is {size:,} bytes, above the limit {policy.max_model_bytes:,}"
    return _found(check, None if ok else ("model_too_large", reason))


def _champion_scores(
    rows: _Rows, champion: ModelEvidence | ChampionUnavailable | None
) -> tuple[_Found, np.ndarray]:
    """The champion's scores (the constant model when there is no champion), and whether the
    champion loads and scores validly."""
    rule = "the champion loads and scores"
    if champion is None:
        return _Found(), rows.constant_model()
    if isinstance(champion, ChampionUnavailable):
        check = Check("champion_available", "fail", rule, detail=champion.reason)
        reason = (
            f"champion version {champion.version} cannot be loaded or scored: {champion.reason}"
        )
        return _found(check, ("champion_unavailable", reason)), np.full(rows.n, np.nan)
    scores = np.asarray(champion.scores, dtype=np.float64)
    bad = _score_problem(scores, rows)
    if bad:
        check = Check(
            "champion_available", "fail", rule, detail=f"champion scores are invalid: {bad}"
        )
        reason = f"champion version {champion.version} cannot be scored: {bad}"
        return _found(check, ("champion_unavailable", reason)), scores
    return _found(Check("champion_available", "pass", rule)), scores


def _better_than_constant(
    rows: _Rows,
    boot: dict[str, PairedComparison],
    has_champion: bool,
    policy: GatePolicy,
) -> _Found:
    """The challenger is credibly better than a constant model (the base rate's AP, or the MAE of
    the constant of :meth:`_Rows.constant_model`)."""
    pct = _pct(policy)
    if not rows.regression:
        base = boot["challenger_vs_base_rate"]
        ok = base.ci_low > 0
        check = Check(
            "better_than_random",
            "pass" if ok else "fail",
            f"{pct} CI lower bound of AP(challenger) - base rate > 0",
            value=base.difference,
            threshold=0.0,
            ci_low=base.ci_low,
            ci_high=base.ci_high,
            challenger=base.challenger,
            champion=base.champion,
            detail=f"AP {base.challenger:.4f} vs base rate {base.champion:.4f}",
        )
        reason = (
            f"challenger AP {base.challenger:.4f} is not "
            f"credibly above the base rate {base.champion:.4f}"
        )
        return _found(check, None if ok else ("worse_than_random", reason))
    cmp = boot["mae_relative"]
    if has_champion:  # boot compares with the champion: compare with the constant separately
        cmp = paired_bootstrap(
            rows.challenger,
            rows.constant_model(),
            rows.labels,
            task=TaskType.REGRESSION,
            n_resamples=policy.n_resamples,
            seed=policy.seed,
            confidence=policy.confidence,
        )["mae_relative"]
    ok = cmp.ci_high < 0
    unit = rows.unit
    check = Check(
        "better_than_constant",
        "pass" if ok else "fail",
        f"{pct} CI upper bound of (MAE(challenger) - MAE({rows.constant_name})) / "
        f"MAE({rows.constant_name}) < 0",
        value=cmp.difference,
        threshold=0.0,
        ci_low=cmp.ci_low,
        ci_high=cmp.ci_high,
        challenger=cmp.challenger,
        champion=cmp.champion,
        detail=f"MAE {_money(cmp.challenger, unit)} vs {_money(cmp.champion, unit)} for the "
        f"{rows.constant_name}",
    )
    reason = (
        f"challenger MAE {_money(cmp.challenger, unit)} is not credibly below the MAE of the "
        f"{rows.constant_name} {_money(cmp.champion, unit)}"
    )
    return _found(check, None if ok else ("worse_than_constant", reason))


def _primary(
    rows: _Rows,
    boot: dict[str, PairedComparison],
    tp: ClassificationGatePolicy | RegressionGatePolicy,
    policy: GatePolicy,
) -> _Found:
    """Non-inferiority on the primary metric: AP with an absolute margin, or MAE with a relative
    one."""
    pct = _pct(policy)
    if isinstance(tp, RegressionGatePolicy):
        margin, p, unit = tp.relative_margin, boot["mae_relative"], rows.unit
        ok = p.ci_high < margin
        ci = f"[{p.ci_low:+.1%}, {p.ci_high:+.1%}]"
        check = Check(
            "primary_non_inferiority",
            "pass" if ok else "fail",
            f"{pct} CI upper bound of (MAE(challenger) - MAE(champion)) / MAE(champion) < {margin}",
            value=p.difference,
            threshold=margin,
            ci_low=p.ci_low,
            ci_high=p.ci_high,
            challenger=p.challenger,
            champion=p.champion,
            detail=f"MAE {_money(p.challenger, unit)} vs {_money(p.champion, unit)}, relative "
            f"difference {p.difference:+.1%}, CI {ci}",
        )
        reason = (
            f"MAE may be worse by more than {margin:.0%}: {_money(p.challenger, unit)} vs "
            f"{_money(p.champion, unit)}, relative difference {p.difference:+.1%}, {pct} CI {ci}"
        )
        return _found(check, None if ok else ("inferior", reason))
    margin, p = tp.non_inferiority_margin, boot[tp.primary_metric]
    ok = p.ci_low > -margin
    check = Check(
        "primary_non_inferiority",
        "pass" if ok else "fail",
        f"{pct} CI lower bound of {p.metric}(challenger - champion) > -{margin}",
        value=p.difference,
        threshold=-margin,
        ci_low=p.ci_low,
        ci_high=p.ci_high,
        challenger=p.challenger,
        champion=p.champion,
        detail=f"{p.metric} {p.challenger:.4f} vs {p.champion:.4f}, difference "
        f"{p.difference:+.4f}, CI [{p.ci_low:+.4f}, {p.ci_high:+.4f}]",
    )
    reason = (
        f"{p.metric} may be worse by more than {margin}: difference {p.difference:+.4f}, {pct} CI "
        f"[{p.ci_low:+.4f}, {p.ci_high:+.4f}]"
    )
    return _found(check, None if ok else ("inferior", reason))


def _classification_guardrails(
    rows: _Rows, boot: dict[str, PairedComparison], champ: np.ndarray, tp: ClassificationGatePolicy
) -> _Found:
    """ROC AUC and Brier score (point difference, CI reported) and lift at the budget."""
    checks: list[Check] = []
    failures: list[Failure] = []
    auc, br, budget = boot["roc_auc"], boot["brier"], rows.budget
    ok = auc.difference >= -tp.auc_margin
    checks.append(Check("guardrail_roc_auc", "pass" if ok else "fail",
                        f"ROC AUC(challenger - champion) >= -{tp.auc_margin}",
                        value=auc.difference, threshold=-tp.auc_margin, ci_low=auc.ci_low,
                        ci_high=auc.ci_high, challenger=auc.challenger, champion=auc.champion))  # fmt: skip
    if not ok:
        failures.append(("guardrail_failed",
                         f"ROC AUC drops by {-auc.difference:.4f} (limit {tp.auc_margin})"))  # fmt: skip
    ok = br.difference <= tp.brier_margin
    checks.append(Check("guardrail_brier", "pass" if ok else "fail",
                        f"Brier(challenger - champion) <= {tp.brier_margin}",
                        value=br.difference, threshold=tp.brier_margin, ci_low=br.ci_low,
                        ci_high=br.ci_high, challenger=br.challenger, champion=br.champion))  # fmt: skip
    if not ok:
        failures.append(("guardrail_failed",
                         f"Brier score rises by {br.difference:.4f} (limit {tp.brier_margin})"))  # fmt: skip
    lift_a = lift_at_budget(rows.challenger, rows.labels, budget)
    lift_b = lift_at_budget(champ, rows.labels, budget)
    rel = lift_a / lift_b - 1.0 if lift_b > 0 else math.inf
    ok = rel >= -tp.lift_relative_margin
    checks.append(Check("guardrail_lift", "pass" if ok else "fail",
                        f"lift at top {budget:.0%}: challenger/champion - 1 >= "
                        f"-{tp.lift_relative_margin}", value=rel,
                        threshold=-tp.lift_relative_margin, challenger=lift_a, champion=lift_b))  # fmt: skip
    if not ok:
        failures.append(("guardrail_failed",
                         f"lift at the top {budget:.0%} drops by {-rel:.1%} ({lift_a:.2f} vs "
                         f"{lift_b:.2f}; limit {tp.lift_relative_margin:.0%})"))  # fmt: skip
    return _Found(tuple(checks), tuple(failures))


def _regression_guardrails(
    rows: _Rows, boot: dict[str, PairedComparison], tp: RegressionGatePolicy
) -> _Found:
    """RMSE (relative point difference, CI reported) and |bias| (in the label's unit)."""
    checks: list[Check] = []
    failures: list[Failure] = []
    unit = rows.unit
    rmse = boot["rmse_relative"]
    ok = rmse.difference <= tp.rmse_relative_margin
    checks.append(Check("guardrail_rmse", "pass" if ok else "fail",
                        f"(RMSE(challenger) - RMSE(champion)) / RMSE(champion) <= "
                        f"{tp.rmse_relative_margin}", value=rmse.difference,
                        threshold=tp.rmse_relative_margin, ci_low=rmse.ci_low,
                        ci_high=rmse.ci_high, challenger=rmse.challenger, champion=rmse.champion,
                        detail=f"RMSE {_money(rmse.challenger, unit)} vs "
                        f"{_money(rmse.champion, unit)}"))  # fmt: skip
    if not ok:
        failures.append(("guardrail_failed",
                         f"RMSE rises by {rmse.difference:.1%} ({_money(rmse.challenger, unit)} "
                         f"vs {_money(rmse.champion, unit)}; limit {tp.rmse_relative_margin:.0%})"))  # fmt: skip
    bias = boot["abs_bias"]
    limit = tp.bias_mae_share * boot["mae"].champion
    ok = bias.difference <= limit
    checks.append(Check("guardrail_bias", "pass" if ok else "fail",
                        f"|bias(challenger)| - |bias(champion)| <= {tp.bias_mae_share} x "
                        f"MAE(champion), bias = mean(pred - label)", value=bias.difference,
                        threshold=limit, ci_low=bias.ci_low, ci_high=bias.ci_high,
                        challenger=boot["bias"].challenger, champion=boot["bias"].champion,
                        detail=f"bias {boot['bias'].challenger:+,.2f} vs "
                        f"{boot['bias'].champion:+,.2f} {unit}".rstrip()))  # fmt: skip
    if not ok:
        failures.append(("guardrail_failed",
                         f"|bias| grows by {_money(bias.difference, unit)} (limit "
                         f"{_money(limit, unit)} = {tp.bias_mae_share} x the champion's MAE)"))  # fmt: skip
    return _Found(tuple(checks), tuple(failures))


def _latency(challenger: ModelEvidence, champion: ModelEvidence, policy: GatePolicy) -> _Found:
    """Batch scoring time at most ``latency_ratio_max`` times the champion's."""
    lat_a, lat_b = challenger.latency_seconds_per_10k, champion.latency_seconds_per_10k
    rule = (
        f"scoring time <= {policy.latency_ratio_max}x the champion's (differences under "
        f"{policy.latency_floor_seconds}s per 10k rows are noise)"
    )
    if lat_a is None or lat_b is None or lat_b <= 0:
        return _found(Check("guardrail_latency", "skip", rule, detail="latency not measured"))
    ratio = lat_a / lat_b
    ok = ratio <= policy.latency_ratio_max or lat_a - lat_b < policy.latency_floor_seconds
    check = Check(
        "guardrail_latency",
        "pass" if ok else "fail",
        rule,
        value=ratio,
        threshold=policy.latency_ratio_max,
        challenger=lat_a,
        champion=lat_b,
        detail=f"{lat_a:.4f}s vs {lat_b:.4f}s per 10,000 rows",
    )
    reason = f"scoring is {ratio:.2f}x slower than the champion (limit {policy.latency_ratio_max}x)"
    return _found(check, None if ok else ("guardrail_failed", reason))


def _value_share(rows: _Rows, champ: np.ndarray | None) -> _Found:
    """Reported, not judged (classification): share of the business value from the top of the
    ranking."""
    if rows.regression:
        return _Found()
    budget = rows.budget
    chal = value_share_at_budget(rows.challenger, rows.values, budget)
    base = None if champ is None else value_share_at_budget(champ, rows.values, budget)
    return _found(
        Check(
            "value_share_at_budget",
            "info",
            f"share of the business value from the top {budget:.0%} by score",
            value=_none_if_nan(chal if base is None else chal - base),
            challenger=_none_if_nan(chal),
            champion=None if base is None else _none_if_nan(base),
        )
    )


def _slice_names(rows: _Rows) -> list[tuple[str, str, str]]:
    """``(slice, segment, check name)`` for every segment of every slice, segments sorted.
    The check is ``slice_<segment>``, or ``slice_<slice>_<segment>`` when two slices share a
    segment label."""
    pairs = [(name, seg) for name, labels in rows.slices.items() for seg in sorted(set(labels))]
    counts: dict[str, int] = {}
    for _, seg in pairs:
        counts[seg] = counts.get(seg, 0) + 1
    return [
        (name, seg, f"slice_{seg}" if counts[seg] == 1 else f"slice_{name}_{seg}")
        for name, seg in pairs
    ]


def _slices(
    rows: _Rows,
    champ: np.ndarray,
    tp: ClassificationGatePolicy | RegressionGatePolicy,
    policy: GatePolicy,
) -> _Found:
    """The primary non-inferiority check on every segment with enough evidence (segment ``k``,
    counted from 1 across slices, resamples with seed ``policy.seed + k``)."""
    checks: list[Check] = []
    failures: list[Failure] = []
    for offset, (name, seg, check_name) in enumerate(_slice_names(rows), 1):
        mask = rows.slices[name] == seg
        check, failure = _segment(
            rows, mask, champ, tp, policy, offset, check_name, f"{name}={seg}"
        )
        checks.append(check)
        if failure is not None:
            failures.append(failure)
    return _Found(tuple(checks), tuple(failures))


def _segment(
    rows: _Rows,
    mask: np.ndarray,
    champ: np.ndarray,
    tp: ClassificationGatePolicy | RegressionGatePolicy,
    policy: GatePolicy,
    offset: int,
    check_name: str,
    where: str,
) -> tuple[Check, Failure | None]:
    pct, n = _pct(policy), int(mask.sum())
    regression = isinstance(tp, RegressionGatePolicy)
    if regression:
        margin = tp.slice_relative_margin
        rule = f"{pct} CI upper bound of relative MAE difference < {margin}"
        too_few = n < tp.slice_min_rows
        evidence = f"{n} rows"
        needs = f"needs {tp.slice_min_rows}"
    else:
        margin = tp.slice_margin
        rule = f"{pct} CI lower bound of {tp.primary_metric} difference > -{margin}"
        pos = int(rows.labels[mask].sum())
        too_few = n < tp.slice_min_rows or pos < tp.slice_min_positives or pos == n
        evidence = f"{n} rows and {pos} positives" if too_few else f"{n} rows, {pos} positives"
        needs = f"needs {tp.slice_min_rows} and {tp.slice_min_positives}"
    if too_few:
        return Check(
            check_name, "skip", rule, detail=f"{evidence}: too few to judge ({needs})"
        ), None
    sb = paired_bootstrap(
        rows.challenger[mask],
        champ[mask],
        rows.labels[mask],
        task=rows.task,
        n_resamples=policy.n_resamples,
        seed=policy.seed + offset,
        confidence=policy.confidence,
    )["mae_relative" if regression else tp.primary_metric]
    ok = sb.ci_high < margin if regression else sb.ci_low > -margin
    check = Check(check_name, "pass" if ok else "fail", rule, value=sb.difference,
                  threshold=margin if regression else -margin, ci_low=sb.ci_low,
                  ci_high=sb.ci_high, challenger=sb.challenger, champion=sb.champion,
                  detail=evidence)  # fmt: skip
    if ok:
        return check, None
    if regression:
        reason = (
            f"slice {where}: relative MAE difference {sb.difference:+.1%}, {pct} CI "
            f"[{sb.ci_low:+.1%}, {sb.ci_high:+.1%}] is not below {margin:.0%}"
        )
    else:
        reason = (
            f"slice {where}: {sb.metric} difference {sb.difference:+.4f}, {pct} CI "
            f"[{sb.ci_low:+.4f}, {sb.ci_high:+.4f}] is below -{margin}"
        )
    return check, ("slice_regressed", reason)


# --- the gate ----------------------------------------------------------------------------------------
def evaluate_gate(
    challenger: ModelEvidence,
    champion: ModelEvidence | ChampionUnavailable | None,
    labels: np.ndarray,
    values: np.ndarray,
    slices: Mapping[str, np.ndarray],
    policy: GatePolicy,
    *,
    task: TaskType,
    expected_features: Sequence[str],
    label: LabelSpec | None = None,
    budget: float = 0.10,
    constant: float | None = None,
) -> GateDecision:
    """Decide whether the challenger may replace the champion.

    Args:
        challenger: evidence of the new model; ``scores`` shape ``(n,)``.
        champion: evidence of the serving model on the same rows; ``None`` when there is no champion
            (outcome ``bootstrap`` if the challenger is sound); :class:`ChampionUnavailable` when a
            champion exists but could not be loaded or scored (always a reject, reason
            ``champion_unavailable``; a person may still promote with ``--force``).
        labels: shape ``(n,)``, labels of the out-of-time evaluation rows (0/1, or the regression
            label in its unit).
        values: shape ``(n,)``, business value per row (the use case's money unit); reported.
        slices: slice name -> shape ``(n,)`` segment labels (strings), from the use case's
            :class:`~rollguard.usecase.SliceSpec` columns; each segment is checked on its own.
        policy: thresholds (the section of ``task`` applies).
        task: the use case's task type.
        expected_features: input names the serving API sends, in order.
        label: the use case's label declaration (regression: unit and bounds of the scores).
        budget: targeting budget, share of rows acted on (classification lift and value share).
        constant: regression: the challenger's training-median label, the constant model it must
            credibly beat (None: the evaluation labels' median).

    Returns:
        A frozen :class:`GateDecision`. Pure: same inputs, same decision.

    Raises:
        ValueError: when ``labels``, ``values`` and the slices do not have one entry per row.
    """
    rows = _inputs(challenger, labels, values, slices, task, label, budget, constant)
    tp = policy.for_task(rows.task)
    done: list[_Found] = []

    def decide(outcome: Outcome, code: str, reasons: list[str]) -> GateDecision:
        return GateDecision(
            outcome=outcome,
            reason_code=code,
            reasons=tuple(reasons),
            checks=tuple(c for found in done for c in found.checks),
            n_rows=rows.n,
            n_positives=rows.n_positives,
            challenger_version=challenger.version,
            champion_version=champion.version if champion is not None else None,
            policy=policy.model_dump(),
            task=rows.task.value,
            unit=rows.unit,
        )

    def failures() -> list[Failure]:
        return [f for found in done for f in found.failures]

    # 1. Nothing is meaningful without valid scores, a matching interface and enough rows.
    for step in (
        lambda: _sanity(rows),
        lambda: _signature(challenger, expected_features),
        lambda: _evidence(rows, tp),
    ):
        done.append(step())
        if done[-1].failed:
            code, reason = done[-1].failures[0]
            return decide("reject", code, [reason])
    done.append(_model_size(challenger, policy))
    found, champ = _champion_scores(rows, champion)
    if found.failed:
        earlier = [r for _, r in failures()]
        done.append(found)
        return decide("reject", "champion_unavailable", [found.failures[0][1], *earlier])
    done.append(found)

    # 2. Better than a constant model; without a champion that is enough.
    boot = paired_bootstrap(
        rows.challenger,
        champ,
        rows.labels,
        task=rows.task,
        n_resamples=policy.n_resamples,
        seed=policy.seed,
        confidence=policy.confidence,
    )
    done.append(_better_than_constant(rows, boot, champion is not None, policy))
    if champion is None:
        done.append(_value_share(rows, None))
        if failures():
            return decide("reject", failures()[0][0], [r for _, r in failures()])
        return decide(
            "bootstrap", "no_champion", [_first_champion_sentence(rows, boot, challenger)]
        )
    assert isinstance(champion, ModelEvidence)  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it

    # 3. Non-inferiority, guardrails (they bound the size of harm; judged on point differences
    # with their CI reported), and the same non-inferiority on every slice segment.
    done.append(_primary(rows, boot, tp, policy))
    if isinstance(tp, RegressionGatePolicy):
        done.append(_regression_guardrails(rows, boot, tp))
    else:
        done.append(_classification_guardrails(rows, boot, champ, tp))
    done.append(_latency(challenger, champion, policy))
    done.append(_value_share(rows, champ))
    done.append(_slices(rows, champ, tp, policy))
    if failures():
        return decide("reject", failures()[0][0], [r for _, r in failures()])
    return decide("promote", "non_inferior", [_promotion_sentence(rows, boot, tp, policy)])


def _first_champion_sentence(
    rows: _Rows, boot: dict[str, PairedComparison], challenger: ModelEvidence
) -> str:
    if rows.regression:
        m = boot["mae_relative"]
        return (
            f"no champion yet: version {challenger.version} becomes the first champion "
            f"(MAE {_money(m.challenger, rows.unit)}, {rows.constant_name} "
            f"{_money(m.champion, rows.unit)})"
        )
    base = boot["challenger_vs_base_rate"]
    return (
        f"no champion yet: version {challenger.version} becomes the first champion "
        f"(AP {base.challenger:.4f}, base rate {base.champion:.4f})"
    )


def _promotion_sentence(
    rows: _Rows,
    boot: dict[str, PairedComparison],
    tp: ClassificationGatePolicy | RegressionGatePolicy,
    policy: GatePolicy,
) -> str:
    pct = _pct(policy)
    if isinstance(tp, RegressionGatePolicy):
        p = boot["mae_relative"]
        return (
            f"challenger is non-inferior: MAE {_money(p.challenger, rows.unit)} vs "
            f"{_money(p.champion, rows.unit)}, relative difference {p.difference:+.1%}, {pct} CI "
            f"[{p.ci_low:+.1%}, {p.ci_high:+.1%}] below +{tp.relative_margin:.0%}; all guardrails "
            "and slices pass"
        )
    p = boot[tp.primary_metric]
    return (
        f"challenger is non-inferior: {p.metric} difference {p.difference:+.4f}, {pct} CI "
        f"[{p.ci_low:+.4f}, {p.ci_high:+.4f}] above -{tp.non_inferiority_margin}; all guardrails "
        "and slices pass"
    )


def _none_if_nan(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)
