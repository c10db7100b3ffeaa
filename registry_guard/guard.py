"""The live guard: after a promotion, watch the champion and roll it back on its own.

Two checks (``docs/design.md``, "Live guard and rollback"), for both task types:

``score_shift`` — right away. The distribution of the champion's newest weekly production scores
(probabilities, or predicted values in the label's unit for regression) against the scores the
same model produced at gate time, measured by the Population Stability Index over quantile bins of
the reference scores (:func:`domain.metrics.population_stability_index`; Siddiqi, *Credit Risk
Scorecards*, 2006, ch. 8). The default threshold is 1.0 (see ``policy.default.yaml``). A
significant shift on enough predictions is a broken model or feature path: ``degraded``.

``realized_quality`` — when labels mature. The champion's logged production scores on the newest
matured cutoffs (``usecase.evaluation_cutoffs`` of them, never before the champion's own evaluation
cutoff), against the previous champion re-scored on the same rows, with the gate's paired bootstrap
(:func:`domain.metrics.paired_bootstrap`, same seed, resamples and confidence) and the gate's
task section (margin and minimum evidence):

* binary classification: ``ok`` when the CI lower bound of ``AP(champion) - AP(previous)`` is
  above ``-margin``; ``degraded`` when its upper bound is below ``-margin``;
* regression: ``ok`` when the CI upper bound of ``(MAE(champion) - MAE(previous)) / MAE(previous)``
  is below the relative margin; ``degraded`` when its lower bound is above it;

otherwise ``inconclusive`` — as is too little evidence (rows, and positives for classification),
a state of its own.

This module owns the guard's decisions for every path: :func:`guard_state` (the "degraded" rule:
``degraded`` if any check is degraded; ``ok`` if one is ok and none degraded; else
``inconclusive``), :func:`degraded_versions` (which version the stored evidence calls degraded)
and :func:`roll_back_degraded` (the one call that rolls a degraded champion back: compare-and-set
on the version, the settings' cooldown, and the registry's target choice — the newest earlier
version neither rejected, rolled back nor ungated). The DAG's check (:func:`check_champion`) and
the alert webhook (:mod:`registry_guard.service`) both go through them.

:func:`check_champion` is split into :func:`gather` (registry, warehouse and prediction reads
through ``domain``), :func:`evaluate_guard` (pure) and :func:`act_on` (rollback and
the ``guard_checks`` row).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert, select

from domain.live_profile import ScoreReference
from domain.metrics import PSI_EPSILON, paired_bootstrap, population_stability_index
from domain.scoring import load_predictions, scored_cutoffs
from domain.warehouse import ingested_weeks, load_records
from registry_guard import registry
from registry_guard.policy import (
    GatePolicy,
    GuardPolicy,
    RegressionGatePolicy,
    load_guard_policy,
    load_policy,
)
from rollguard.db.models import AliasAudit, GuardCheckRow
from rollguard.usecase import TaskType, UseCase
from rollguard.weeks import horizon_weeks, parse_iso_week

if TYPE_CHECKING:
    from rollguard.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["PSI_EPSILON", "population_stability_index"]

GuardState = Literal["ok", "degraded", "inconclusive"]
GuardVerdict = Literal["ok", "degraded", "inconclusive", "skip"]
GUARD_STATES: frozenset[str] = frozenset({"ok", "degraded", "inconclusive"})

#: Version tag holding the (newest) evaluation cutoff of a trained version: ``YYYY-MM-DD``.
EVALUATION_CUTOFF_TAG = "rollguard.cutoff.evaluation"
#: Version tag holding every evaluation cutoff the gate pooled, comma-separated (read first).
EVALUATION_POOL_TAG = "rollguard.cutoff.evaluation_pool"
#: Gate outcomes that count as "passed the gate".
PASSED_GATE: frozenset[str] = frozenset({"promote", "bootstrap"})
SCORE_SHIFT = "score_shift"
LIVE_SCORE_SHIFT = "live_score_shift"
REALIZED_QUALITY = "realized_quality"


# --- pure core -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuardCheck:
    """One check of the guard.

    Attributes:
        name: ``score_shift`` or ``realized_quality``.
        verdict: ``ok``, ``degraded``, ``inconclusive`` (too little or ambiguous evidence) or
            ``skip`` (cannot run yet or at all; ``detail`` says why).
        rule: the rule in words.
        value: PSI (dimensionless), or the difference ``metric(champion) - metric(previous)``.
        threshold: the limit ``value`` is compared with (PSI threshold, or ``-margin``).
        ci_low, ci_high: paired-bootstrap CI of the difference (realized check only).
        n_rows, n_positives: evidence behind the check (live predictions, or labelled rows).
        detail: readable explanation of the verdict.
    """

    name: str
    verdict: GuardVerdict
    rule: str
    value: float | None = None
    threshold: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_rows: int | None = None
    n_positives: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class GuardReport:
    """The frozen result of :func:`evaluate_guard`.

    Attributes:
        state: ``degraded`` if any check is degraded; ``ok`` if one is ok and none degraded;
            otherwise ``inconclusive``.
        checks: every check, in the order ``score_shift``, ``realized_quality``.
        reasons: readable sentences, one per check.
        champion_version, reference_version, previous_version: versions behind the checks.
        live_cutoff: cutoff of the live scores (``YYYY-MM-DD``); realized_cutoff: cutoff of the
            matured labels used by the realized check.
        policy: the guard and gate values used (plain mapping).
    """

    state: GuardState
    checks: tuple[GuardCheck, ...]
    reasons: tuple[str, ...]
    champion_version: str | None = None
    reference_version: str | None = None
    previous_version: str | None = None
    live_cutoff: str | None = None
    realized_cutoff: str | None = None
    policy: dict = field(default_factory=dict, hash=False, compare=False)

    def check(self, name: str) -> GuardCheck:
        """The check called ``name``. Raises KeyError when absent."""
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the report (NaN and infinities become None)."""
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        data["reasons"] = list(self.reasons)
        return _finite(data)

    def to_json(self) -> str:
        """The report as strict JSON."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _score_shift(
    live: np.ndarray | None,
    reference: np.ndarray | None,
    policy: GuardPolicy,
    skip_reason: str,
) -> GuardCheck:
    thr = policy.psi_threshold
    rule = (
        f"PSI of live scores vs gate-time scores ({policy.psi_bins} quantile bins) <= {thr} "
        f"on >= {policy.psi_min_predictions:,} predictions"
    )
    if live is None or reference is None:
        return GuardCheck(
            SCORE_SHIFT, "skip", rule, threshold=thr, detail=skip_reason or "no scores to compare"
        )
    live = np.asarray(live, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    n = int(live.size)
    bad = int((~np.isfinite(live)).sum())
    if bad and n >= policy.psi_min_predictions:
        return GuardCheck(
            SCORE_SHIFT,
            "degraded",
            rule,
            threshold=thr,
            n_rows=n,
            detail=f"{bad:,} of {n:,} live scores are NaN or infinite: the model or its "
            "feature path is broken",
        )
    if n < policy.psi_min_predictions:
        return GuardCheck(
            SCORE_SHIFT,
            "inconclusive",
            rule,
            threshold=thr,
            n_rows=n,
            detail=f"{n:,} live predictions: too few to judge "
            f"(needs {policy.psi_min_predictions:,})",
        )
    reference = reference[np.isfinite(reference)]
    if reference.size < policy.psi_bins:
        return GuardCheck(
            SCORE_SHIFT,
            "skip",
            rule,
            threshold=thr,
            n_rows=n,
            detail=f"{reference.size} finite reference scores: too few for {policy.psi_bins} bins",
        )
    psi = population_stability_index(reference, live, bins=policy.psi_bins)
    shifted = psi > thr
    return GuardCheck(
        SCORE_SHIFT,
        "degraded" if shifted else "ok",
        rule,
        value=psi,
        threshold=thr,
        n_rows=n,
        detail=f"PSI {psi:.4f} on {n:,} live vs {reference.size:,} gate-time scores "
        f"({'above' if shifted else 'within'} the threshold {thr})",
    )


def _realized_rule(policy: GatePolicy, task: TaskType) -> tuple[str, float]:
    """The realized-quality rule in words and its threshold (``-margin``, or the relative
    margin for regression)."""
    pct = f"{policy.confidence:.0%}"
    tp = policy.for_task(task)
    if isinstance(tp, RegressionGatePolicy):
        m = tp.relative_margin
        return (
            f"ok when the {pct} CI upper bound of (MAE(champion) - MAE(previous)) / MAE(previous) "
            f"< {m}; degraded when its lower bound > {m}"
        ), m
    m = tp.non_inferiority_margin
    return (
        f"ok when the {pct} CI lower bound of {tp.primary_metric}(champion - previous) > -{m}; "
        f"degraded when its upper bound < -{m}"
    ), -m


def _too_little(n: int, pos: int | None, policy: GatePolicy, task: TaskType) -> str | None:
    """Why ``n`` labelled rows (``pos`` positives) are too little evidence, or None."""
    tp = policy.for_task(task)
    if isinstance(tp, RegressionGatePolicy):
        if n < tp.min_rows:
            return f"{n:,} labelled rows: too little evidence (needs {tp.min_rows:,} rows)"
        return None
    assert pos is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
    if n < tp.min_rows or pos < tp.min_positives or pos == n:
        return (
            f"{n:,} labelled rows and {pos:,} positives: too little evidence "
            f"(needs {tp.min_rows:,} rows and {tp.min_positives:,} positives)"
        )
    return None


def _realized_quality(
    champion: np.ndarray | None,
    previous: np.ndarray | None,
    labels: np.ndarray | None,
    policy: GatePolicy,
    skip_reason: str,
    task: TaskType = TaskType.BINARY_CLASSIFICATION,
    unit: str = "",
) -> GuardCheck:
    rule, threshold = _realized_rule(policy, task)
    regression = task is TaskType.REGRESSION
    if champion is None or previous is None or labels is None:
        return GuardCheck(
            REALIZED_QUALITY,
            "skip",
            rule,
            threshold=threshold,
            detail=skip_reason or "no matured labels",
        )
    champion = np.asarray(champion, dtype=np.float64).ravel()
    previous = np.asarray(previous, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64 if regression else np.int64).ravel()
    n = int(labels.size)
    pos = None if regression else int(labels.sum())
    if champion.shape != (n,) or previous.shape != (n,):
        raise ValueError(
            f"champion, previous and labels must have one shape; got {champion.shape}, "
            f"{previous.shape}, {labels.shape}"
        )
    base = dict(threshold=threshold, n_rows=n, n_positives=pos)
    too_little = _too_little(n, pos, policy, task)
    if too_little:
        return GuardCheck(REALIZED_QUALITY, "inconclusive", rule, detail=too_little, **base)
    if not (np.isfinite(champion).all() and np.isfinite(previous).all()):
        detail = "scores hold NaN or infinite values; the comparison cannot be made"
        return GuardCheck(REALIZED_QUALITY, "inconclusive", rule, detail=detail, **base)
    metric = "mae_relative" if regression else policy.classification.primary_metric
    cmp = paired_bootstrap(
        champion,
        previous,
        labels,
        task=task,
        n_resamples=policy.n_resamples,
        seed=policy.seed,
        confidence=policy.confidence,
    )[metric]
    verdict: GuardVerdict
    if regression:
        ok, bad = cmp.ci_high < threshold, cmp.ci_low > threshold
        detail = (
            f"MAE {cmp.challenger:,.2f} (champion) vs {cmp.champion:,.2f} (previous) {unit}, "
            f"relative difference {cmp.difference:+.1%}, {policy.confidence:.0%} CI "
            f"[{cmp.ci_low:+.1%}, {cmp.ci_high:+.1%}] on {n:,} rows"
        ).replace("  ", " ")
    else:
        ok, bad = cmp.ci_low > threshold, cmp.ci_high < threshold
        detail = (
            f"{metric} {cmp.challenger:.4f} (champion) vs {cmp.champion:.4f} (previous), "
            f"difference {cmp.difference:+.4f}, {policy.confidence:.0%} CI "
            f"[{cmp.ci_low:+.4f}, {cmp.ci_high:+.4f}] on {n:,} rows, {pos:,} positives"
        )
    verdict = "ok" if ok else "degraded" if bad else "inconclusive"
    return GuardCheck(
        REALIZED_QUALITY,
        verdict,
        rule,
        value=cmp.difference,
        ci_low=cmp.ci_low,
        ci_high=cmp.ci_high,
        detail=detail,
        **base,
    )


@dataclass(frozen=True)
class LiveShiftEvidence:
    """The model server's live score shift of one version, as Prometheus holds it.

    Attributes:
        version: the serving version the figures are about.
        psi: the highest live score PSI over the servers that export it (None: none exports it).
        window_rows: the rows behind that PSI (the smallest window among the servers).
        reference: the version's score reference (its tag), None when it has none.
    """

    version: str
    psi: float | None
    window_rows: int | None
    reference: ScoreReference | None


def live_shift_check(evidence: LiveShiftEvidence, policy: GuardPolicy) -> GuardCheck:
    """Decide whether a live score shift is rollback evidence: the one owner of "roll back on the
    model server's live signal" (docs/design.md, "Live signals").

    ``degraded`` only when all hold: the version reached champion without passing the gate (its
    reference source is ``replaced``: the scores are those of the champion it replaced, the last
    distribution the gate approved for this population); the PSI is above the guard policy's
    ``psi_threshold``; and the window holds at least ``live_min_predictions`` rows. A gated
    version whose live scores moved away from its *own* gate-time scores is ``inconclusive``: its
    inputs moved (population or caller-side change), which a rollback does not fix; the alert pages a
    person and the weekly check with matured labels decides.
    """
    thr, need = policy.psi_threshold, policy.live_min_predictions
    rule = (
        f"live score PSI vs the approved gate-time scores > {thr} on >= {need:,} predictions, "
        "for a version that did not pass the gate"
    )
    base = dict(name=LIVE_SCORE_SHIFT, rule=rule, threshold=thr, value=evidence.psi)
    ref, psi, n = evidence.reference, evidence.psi, evidence.window_rows
    if ref is None:
        return GuardCheck(
            **base, verdict="skip", detail=f"version {evidence.version} has no score reference"
        )
    if psi is None or n is None or not math.isfinite(psi):
        return GuardCheck(
            **base, verdict="skip",
            detail=f"no server exports a finite live score PSI for version {evidence.version}",
        )  # fmt: skip
    if n < need:
        return GuardCheck(
            **base, verdict="inconclusive", n_rows=n,
            detail=f"{n:,} live predictions in the window: too few to judge (needs {need:,})",
        )  # fmt: skip
    if psi <= thr:
        return GuardCheck(
            **base, verdict="ok", n_rows=n,
            detail=f"live score PSI {psi:.3f} on {n:,} predictions is within {thr}",
        )  # fmt: skip
    if ref.source == "gated":
        return GuardCheck(
            **base, verdict="inconclusive", n_rows=n,
            detail=f"live score PSI {psi:.3f} on {n:,} predictions against its own gate-time "
            f"scores: version {evidence.version} passed the gate, so its inputs moved; a person "
            "decides",
        )  # fmt: skip
    return GuardCheck(
        **base, verdict="degraded", n_rows=n,
        detail=f"live score PSI {psi:.3f} on {n:,} predictions against the gate-time scores of "
        f"version {ref.version}, which version {evidence.version} replaced without passing the "
        "gate",
    )  # fmt: skip


def live_shift_report(evidence: LiveShiftEvidence, policy: GuardPolicy) -> GuardReport:
    """A guard report of the live check alone (:func:`live_shift_check`), for :func:`act_on`."""
    check = live_shift_check(evidence, policy)
    return GuardReport(
        state=guard_state((check,)),
        checks=(check,),
        reasons=(check.detail,),
        champion_version=evidence.version,
        reference_version=evidence.reference.version if evidence.reference else None,
        policy={"guard": policy.model_dump()},
    )


def guard_state(checks: tuple[GuardCheck, ...] | list[GuardCheck]) -> GuardState:
    """The "degraded" rule: ``degraded`` if any check is degraded; ``ok`` if at least one is ok
    and none is degraded; otherwise ``inconclusive`` (skips and inconclusive checks are never read
    as a pass or a fail)."""
    verdicts = {c.verdict for c in checks}
    if "degraded" in verdicts:
        return "degraded"
    if "ok" in verdicts:
        return "ok"
    return "inconclusive"


def _policy_summary(gate_policy: GatePolicy, guard_policy: GuardPolicy, task: TaskType) -> dict:
    shared = {k: getattr(gate_policy, k) for k in ("confidence", "n_resamples", "seed")}
    section = "regression" if task is TaskType.REGRESSION else "classification"
    return {
        "guard": guard_policy.model_dump(),
        "gate": {**shared, section: gate_policy.for_task(task).model_dump()},
    }


def evaluate_guard(
    *,
    live_scores: np.ndarray | None,
    reference_scores: np.ndarray | None,
    champion_scores: np.ndarray | None,
    previous_scores: np.ndarray | None,
    labels: np.ndarray | None,
    gate_policy: GatePolicy,
    guard_policy: GuardPolicy,
    task: TaskType = TaskType.BINARY_CLASSIFICATION,
    unit: str = "",
    shift_skip_reason: str = "",
    realized_skip_reason: str = "",
    champion_version: str | None = None,
    reference_version: str | None = None,
    previous_version: str | None = None,
    live_cutoff: str | None = None,
    realized_cutoff: str | None = None,
) -> GuardReport:
    """Judge the champion from arrays alone (pure).

    Args:
        live_scores: shape ``(m,)``, the champion's newest production scores, or None when there
            are none (the shift check is ``skip`` with ``shift_skip_reason``).
        reference_scores: shape ``(k,)``, the scores at gate time, or None (no reference version).
        champion_scores: shape ``(n,)``, the champion's scores on rows whose label has matured;
            None skips the realized check with ``realized_skip_reason``.
        previous_scores: shape ``(n,)``, the previous champion's scores on the same rows.
        labels: shape ``(n,)``, matured labels of those rows (0/1, or regression values).
        gate_policy: bootstrap seed, resamples and confidence, and the task section's margin and
            minimum evidence (shared with the gate). guard_policy: PSI threshold, bins and minimum
            predictions.
        task: the use case's task type. unit: the label's unit (regression reports).
        *_version, *_cutoff: carried into the report for its readers.

    Returns:
        A :class:`GuardReport` with the state (:func:`guard_state`), both checks and one reason
        per check.

    Raises:
        ValueError: when the realized arrays have different shapes.
    """
    task = TaskType(task)
    shift = _score_shift(live_scores, reference_scores, guard_policy, shift_skip_reason)
    realized = _realized_quality(
        champion_scores, previous_scores, labels, gate_policy, realized_skip_reason, task, unit
    )
    checks = (shift, realized)
    return GuardReport(
        state=guard_state(checks),
        checks=checks,
        reasons=tuple(f"{c.name}: {c.verdict}: {c.detail}" for c in checks),
        champion_version=champion_version,
        reference_version=reference_version,
        previous_version=previous_version,
        live_cutoff=live_cutoff,
        realized_cutoff=realized_cutoff,
        policy=_policy_summary(gate_policy, guard_policy, task),
    )


# --- who decides "degraded", and the one rollback ------------------------------------------------
def degraded_versions(engine: Engine, model_name: str) -> set[str]:
    """Champion versions the store's evidence calls degraded: the newest live-guard check, when its
    state is ``degraded``. Empty when there is no such evidence.

    Only the guard's check counts: it compares the champion with the previous champion on the
    same matured rows (and its scores with its own gate-time scores), so it is not fooled by the
    cohort ageing between weeks. The monitor step's live-quality figure is a warning, never
    rollback evidence (docs/monitoring.md).
    """
    with engine.connect() as conn:
        check = conn.execute(
            select(GuardCheckRow.state, GuardCheckRow.champion_version)
            .where(GuardCheckRow.model_name == model_name)
            .order_by(GuardCheckRow.checked_at.desc(), GuardCheckRow.id.desc())
            .limit(1)
        ).first()
    if check is not None and check.state == "degraded" and check.champion_version:
        return {str(check.champion_version)}
    return set()


@dataclass(frozen=True)
class RollbackOutcome:
    """What :func:`roll_back_degraded` did: the move (``move.replayed`` when the fingerprint had
    already moved the alias), or why nothing moved (``refused``)."""

    move: registry.AliasMove | None
    refused: str | None


def roll_back_degraded(
    settings: Settings,
    *,
    champion: str,
    actor: registry.Actor,
    fingerprint: str,
    reason: str,
    evidence: dict[str, Any],
    client: Any,
    engine: Engine,
    now: datetime | None = None,
) -> RollbackOutcome:
    """Roll the degraded ``champion`` back: the one rollback of the guard's check and the alert path.

    Compare-and-set on ``champion``, the settings' ``rollback_cooldown_seconds``, idempotent per
    ``fingerprint``; the target is the registry's choice (the newest earlier version that is not
    rejected, rolled back or an ungated candidate, :func:`registry_guard.registry.rollback`).

    Returns:
        A :class:`RollbackOutcome`; a refusal (cooldown, nothing to return to, the champion moved
        meanwhile) is returned, not raised, and leaves a ``refused`` audit row.
    """
    try:
        move = registry.rollback(
            reason,
            actor,
            fingerprint=fingerprint,
            model_name=settings.model_name,
            expected=champion,
            cooldown_seconds=settings.rollback_cooldown_seconds,
            evidence=evidence,
            client=client,
            engine=engine,
            now=now,
        )
    except (registry.RollbackRefused, registry.ChampionMoved) as exc:
        log.warning("guard: rollback of %s refused: %s", champion, exc)
        return RollbackOutcome(None, f"rollback refused: {exc}")
    return RollbackOutcome(move, None)


# --- I/O edge: gather ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuardInputs:
    """What :func:`gather` found for one check of the champion (arrays as in
    :func:`evaluate_guard`; a None array comes with its skip reason)."""

    champion: str | None
    reference: str | None = None
    previous: str | None = None
    live_scores: np.ndarray | None = None
    reference_scores: np.ndarray | None = None
    champion_scores: np.ndarray | None = None
    previous_scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    shift_skip: str = ""
    realized_skip: str = ""
    live_cutoff: date | None = None
    realized_cutoffs: tuple[date, ...] = ()


@dataclass(frozen=True)
class GuardResult:
    """What :func:`check_champion` did.

    Attributes:
        report: the guard report. state: its state (shortcut).
        cutoff: newest cutoff of the champion's production predictions (``YYYY-MM-DD``) or None.
        rollback: the alias move made (or replayed, ``rollback.replayed``) by this check, or None.
        rollback_refused: why a wanted rollback was not made (refused, dry run, or policy off).
        row_id: id of the ``guard_checks`` row written.
    """

    model_name: str
    champion_version: str | None
    reference_version: str | None
    previous_version: str | None
    cutoff: str | None
    state: GuardState
    reason: str
    report: GuardReport
    rollback: registry.AliasMove | None
    rollback_refused: str | None
    row_id: int
    checked_at: datetime


def _promoting_move(engine: Engine, model_name: str, version: str) -> Any:
    """The newest ``moved`` promote/bootstrap audit row that made ``version`` champion.

    A rollback *to* a version does not count: its ``from_version`` is the version rolled back,
    not the champion this one replaced when it was promoted.
    """
    with engine.connect() as conn:
        return conn.execute(
            select(AliasAudit.__table__)
            .where(
                AliasAudit.model_name == model_name,
                AliasAudit.outcome == "moved",
                AliasAudit.action != "rollback",
                AliasAudit.to_version == version,
            )
            .order_by(AliasAudit.moved_at.desc(), AliasAudit.id.desc())
            .limit(1)
        ).first()


def _passed_gate(mv: Any) -> bool:
    return (mv.tags or {}).get(registry.DECISION_TAG) in PASSED_GATE


def gate_cutoffs(tag: str | None) -> tuple[date, ...]:
    """The evaluation cutoffs in a version's ``rollguard.cutoff.evaluation_pool`` (comma-separated)
    or ``rollguard.cutoff.evaluation`` tag, oldest first (empty when the tag is missing)."""
    if not tag:
        return ()
    return tuple(sorted(date.fromisoformat(part.strip()) for part in tag.split(",") if part))


class _Warehouse:
    """Lazy, cached reads for one check: the records (through ``domain.warehouse``) and the use
    case's rows at a cutoff."""

    def __init__(self, settings: Settings, engine: Engine, usecase: UseCase) -> None:
        self.settings, self.engine, self.usecase = settings, engine, usecase
        self._records: pd.DataFrame | None = None

    def rows(self, cutoff: date, *, label_available: bool) -> pd.DataFrame:
        if self._records is None:
            self._records = load_records(self.settings, engine=self.engine)
        return self.usecase.build_rows(self._records, cutoff, label_available=label_available)

    def matured_cutoffs(self) -> list[date]:
        """Cutoffs whose label has matured and that have ingested weeks before them, oldest
        first (the Monday after the newest ingested week included)."""
        weeks = ingested_weeks(self.settings, engine=self.engine)
        if not weeks:
            return []
        have, first = set(weeks), parse_iso_week(weeks[0])
        candidates = [parse_iso_week(w) for w in weeks] + [parse_iso_week(weeks[-1]) + timedelta(7)]
        horizon = self.settings.horizon_days
        return [
            c
            for c in sorted(set(candidates))
            if c > first and all(w in have for w in horizon_weeks(c, horizon))
        ]


def _shift_inputs(
    settings: Settings,
    house: _Warehouse,
    champion: str,
    gate_at: tuple[date, ...],
    predict: Any,
) -> tuple[np.ndarray | None, np.ndarray | None, date | None, str]:
    """Live scores (newest production batch of ``champion``) and its own scores at gate time
    (rows at its evaluation cutoffs rebuilt from the warehouse): ``(live, reference, cutoff,
    skip reason)``."""
    cutoffs = scored_cutoffs(settings, champion)
    live_cutoff = cutoffs[-1] if cutoffs else None
    if live_cutoff is None:
        return None, None, None, f"version {champion} has no production predictions yet"
    if not gate_at:
        return None, None, live_cutoff, f"version {champion} has no tag {EVALUATION_CUTOFF_TAG}"
    live = load_predictions(settings, live_cutoff, champion)
    frames = [house.rows(c, label_available=False) for c in gate_at]
    rows = pd.concat(frames, ignore_index=True)
    if live is None or rows.empty:
        reason = f"no gate-time rows at {', '.join(map(str, gate_at))} for version {champion}"
        return None, None, live_cutoff, reason
    reference = predict(house.usecase.feature_frame(rows))
    return live["score"].to_numpy(dtype=np.float64), reference, live_cutoff, ""


def _realized_inputs(
    settings: Settings,
    house: _Warehouse,
    champion: str,
    previous: str | None,
    gate_at: tuple[date, ...],
    predict: Any,
    load_previous: Any,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, tuple[date, ...], str]:
    """Champion and previous-champion scores and labels on the newest matured cutoffs (at most
    ``usecase.evaluation_cutoffs``, none before the champion's own evaluation cutoff): the
    champion's logged production scores where it served, else the champion re-scored.
    Returns ``(champion, previous, labels, cutoffs, skip reason)``."""
    usecase = house.usecase
    matured = house.matured_cutoffs()
    if previous is None:
        reason = f"version {champion} replaced no champion: nothing to compare with"
        return None, None, None, (), reason
    if not matured:
        reason = f"no cutoff has a matured label yet (horizon {settings.horizon_days} days)"
        return None, None, None, (), reason
    usable = [c for c in matured if not gate_at or c >= gate_at[0]]
    if not usable:
        return (
            None,
            None,
            None,
            (),
            (f"labels have not matured past the evaluation cutoff {gate_at[0]} of {champion}"),
        )
    cutoffs = tuple(usable[-usecase.evaluation_cutoffs :])
    try:
        prev_model = load_previous(previous)
    except registry.RegistryError as exc:
        return None, None, None, cutoffs, f"previous champion {previous} cannot be loaded: {exc}"
    champ_parts, prev_parts, label_parts = [], [], []
    key = usecase.entity_column
    for cutoff in cutoffs:
        rows = house.rows(cutoff, label_available=True)
        logged = load_predictions(settings, cutoff, champion)
        if logged is not None:
            rows = rows.merge(logged[[key, "score"]], on=key, how="inner", validate="1:1")
            champ_parts.append(rows["score"].to_numpy(dtype=np.float64))
        else:
            champ_parts.append(np.asarray(predict(usecase.feature_frame(rows)), np.float64))
        features = usecase.feature_frame(rows)
        prev_parts.append(np.asarray(prev_model.predict(features) if len(rows) else [], np.float64))
        label_parts.append(rows[usecase.label.column].to_numpy(dtype=np.float64))
    labels = np.concatenate(label_parts)
    if usecase.is_classification:
        labels = labels.astype(np.int64)
    return np.concatenate(champ_parts), np.concatenate(prev_parts), labels, cutoffs, ""


def gather(settings: Settings, *, client: Any, engine: Engine) -> GuardInputs:
    """Read what the guard judges the champion of ``settings.model_name`` on.

    - live scores: the champion's production predictions at its newest scored cutoff
      (:func:`domain.scoring.scored_cutoffs`, :func:`domain.scoring.load_predictions`);
    - reference scores: the champion's own scores at gate time, on the rows at its evaluation
      cutoffs (version tag ``rollguard.cutoff.evaluation_pool``, else
      ``rollguard.cutoff.evaluation``) rebuilt from the warehouse: the same
      model on both sides, so a large shift is a broken feature or serving path;
    - realized: see :func:`_realized_inputs`; the previous champion is the ``from_version`` of
      the promotion that made the champion. A champion forced past a failing gate is therefore
      judged on fresh matured labels in its first check.

    Raises:
        AliasTargetMissing: the champion names a version the registry has lost.
    """
    model = settings.model_name
    champion = registry.read_pointer(engine, model) or registry.alias_version(
        client, model, registry.CHAMPION
    )
    if champion is None:
        return GuardInputs(None, shift_skip="no champion", realized_skip="no champion")
    champ_mv = registry.get_version(client, model, champion, alias=registry.CHAMPION)
    move = _promoting_move(engine, model, champion)
    previous: str | None = move.from_version if move is not None else None
    tags = champ_mv.tags or {}
    gate_at = gate_cutoffs(tags.get(EVALUATION_POOL_TAG) or tags.get(EVALUATION_CUTOFF_TAG))
    house = _Warehouse(settings, engine, settings.usecase_spec)
    loaded: list[registry.LoadedModel] = []

    def predict(frame: pd.DataFrame) -> np.ndarray:
        if not loaded:
            loaded.append(registry.load_version(client, model, champion, alias=registry.CHAMPION))
        return loaded[0].predict(frame)

    live, reference, live_cutoff, shift_skip = _shift_inputs(
        settings, house, champion, gate_at, predict
    )
    champ_scores, prev_scores, labels, realized_at, realized_skip = _realized_inputs(
        settings,
        house,
        champion,
        previous,
        gate_at,
        predict,
        lambda version: registry.load_version(client, model, version),
    )
    return GuardInputs(
        champion=champion,
        reference=champion,
        previous=previous,
        live_scores=live,
        reference_scores=reference,
        champion_scores=champ_scores,
        previous_scores=prev_scores,
        labels=labels,
        shift_skip=shift_skip,
        realized_skip=realized_skip,
        live_cutoff=live_cutoff,
        realized_cutoffs=realized_at if not realized_skip else (),
    )


# --- I/O edge: act -----------------------------------------------------------------------------------
def _record(engine: Engine, values: dict[str, Any]) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(GuardCheckRow).values(**values).returning(GuardCheckRow.id)
            ).scalar_one()
        )


def _reason(report: GuardReport) -> str:
    champion = report.champion_version
    degraded = [c for c in report.checks if c.verdict == "degraded"]
    if degraded:
        return f"champion {champion} is degraded: " + "; ".join(
            f"{c.name}: {c.detail}" for c in degraded
        )
    return f"champion {champion} is {report.state}: " + "; ".join(
        f"{c.name} {c.verdict}" for c in report.checks
    )


def act_on(
    settings: Settings,
    report: GuardReport,
    *,
    client: Any,
    engine: Engine,
    allowed: bool = True,
    now: datetime,
    actor: registry.Actor = "guard",
    fingerprint: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> GuardResult:
    """Roll a degraded champion back (through :func:`roll_back_degraded`, as ``actor``, with
    ``fingerprint``, default ``guard:<model>:<version>:<cutoff>``; ``evidence`` is stored beside the
    report in the audit row) unless ``allowed`` is False (dry run) or the guard policy's
    ``auto_rollback`` is off, and record one ``guard_checks`` row.

    A refused rollback is recorded in the row's reason; the state stays ``degraded``. A second
    check of the same version and cutoff replays the earlier rollback and moves nothing.
    """
    model, champion, cutoff = settings.model_name, report.champion_version, report.live_cutoff
    reason = _reason(report) if champion else f"model {model!r} has no champion: nothing to guard"
    outcome = RollbackOutcome(None, None)
    if report.state == "degraded" and champion is not None:
        if not allowed:
            outcome = RollbackOutcome(None, "dry run: rollback not attempted")
        elif not load_guard_policy(settings.gate_policy_path).auto_rollback:
            outcome = RollbackOutcome(
                None, "auto_rollback is off in the guard policy: rollback not attempted"
            )
        else:
            outcome = roll_back_degraded(
                settings,
                champion=champion,
                actor=actor,
                fingerprint=fingerprint or f"guard:{model}:{champion}:{cutoff}",
                reason=reason,
                evidence={**(evidence or {}), "guard": report.to_dict()},
                client=client,
                engine=engine,
                now=now,
            )
        move = outcome.move
        if move is not None and move.replayed:
            reason += (
                f"; the rollback of version {champion} for cutoff {cutoff} was already "
                f"made (to version {move.to_version}); nothing moved"
            )
        elif move is not None:
            reason += f"; rolled back to version {move.to_version}"
        elif outcome.refused is not None:
            reason += f"; {outcome.refused}"
    move = outcome.move
    row_id = _record(
        engine,
        dict(
            model_name=model,
            champion_version=champion,
            reference_version=report.reference_version,
            previous_version=report.previous_version,
            cutoff=cutoff,
            state=report.state,
            reason=reason,
            report=report.to_json(),
            rolled_back_to=move.to_version if move is not None and not move.replayed else None,
            checked_at=now,
        ),
    )
    return GuardResult(
        model_name=model,
        champion_version=champion,
        reference_version=report.reference_version,
        previous_version=report.previous_version,
        cutoff=cutoff,
        state=report.state,
        reason=reason,
        report=report,
        rollback=move,
        rollback_refused=outcome.refused,
        row_id=row_id,
        checked_at=now,
    )


def check_champion(
    settings: Settings,
    *,
    client: Any,
    engine: Engine,
    act: bool = True,
    now: datetime | None = None,
) -> GuardResult:
    """Check the champion of ``settings.model_name`` now: :func:`gather`, :func:`evaluate_guard`,
    then roll back when degraded and record the check (:func:`act_on`).

    Args:
        settings: use case, model name, horizon, policy path and rollback cooldown (seconds).
        client: MLflow client (from :func:`rollguard.mlflow_client.mlflow_client`).
        engine: the migrated monitoring store.
        act: when False (dry run) nothing moves; the check is still recorded.
        now: time of the check (UTC); default now.

    Returns:
        A :class:`GuardResult`; one ``guard_checks`` row is written per call. Without a champion
        the state is ``inconclusive`` with that reason.

    Raises:
        ConfigurationError: the policy file is invalid.
        AliasTargetMissing: the champion names a version the registry has lost.
    """
    inputs = gather(settings, client=client, engine=engine)
    usecase = settings.usecase_spec
    report = evaluate_guard(
        live_scores=inputs.live_scores,
        reference_scores=inputs.reference_scores,
        champion_scores=inputs.champion_scores,
        previous_scores=inputs.previous_scores,
        labels=inputs.labels,
        gate_policy=load_policy(settings.gate_policy_path),
        guard_policy=load_guard_policy(settings.gate_policy_path),
        task=usecase.task,
        unit=usecase.label.unit,
        shift_skip_reason=inputs.shift_skip,
        realized_skip_reason=inputs.realized_skip,
        champion_version=inputs.champion,
        reference_version=inputs.reference,
        previous_version=inputs.previous,
        live_cutoff=inputs.live_cutoff.isoformat() if inputs.live_cutoff else None,
        realized_cutoff=inputs.realized_cutoffs[-1].isoformat()
        if inputs.realized_cutoffs
        else None,
    )
    return act_on(
        settings, report, client=client, engine=engine, allowed=act, now=now or datetime.now(UTC)
    )


def latest_guard_state(engine: Engine, model_name: str) -> str | None:
    """State (``ok``, ``degraded``, ``inconclusive``) of the newest guard check of ``model_name``,
    or None when it was never checked. The retrain decision reads it."""
    with engine.connect() as conn:
        return conn.execute(
            select(GuardCheckRow.state)
            .where(GuardCheckRow.model_name == model_name)
            .order_by(GuardCheckRow.checked_at.desc(), GuardCheckRow.id.desc())
            .limit(1)
        ).scalar_one_or_none()
