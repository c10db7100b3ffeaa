"""The live guard: after a promotion, watch the champion and roll it back on its own.

Two checks (``DESIGN.md``, "Live guard and rollback"):

``score_shift`` — right away. The distribution of the champion's newest weekly production scores
against the scores produced at gate time, measured by the **Population Stability Index**

    PSI = sum_i (q_i - p_i) * ln(q_i / p_i)

over decile bins of the reference scores, ``p_i`` the reference share and ``q_i`` the live share of
bin ``i`` (Siddiqi, N., *Credit Risk Scorecards*, Wiley 2006, ch. 8 "System stability report";
Yurdakul, B., *Statistical Properties of Population Stability Index*, Western Michigan University
2018). Siddiqi's rule of thumb reads PSI < 0.10 as no shift, 0.10–0.25 as a small shift and
> 0.25 as a significant shift for a stable population; the default threshold here is 1.0,
calibrated on CDNOW (see ``policy.default.yaml``). Empty bins get a small share
``epsilon`` so the logarithm stays finite. A significant shift on enough predictions is a broken
model or feature path: ``degraded``.

``realized_quality`` — when labels mature. The champion's logged production scores at the newest
scored cutoff whose label has matured, against the previous champion re-scored on the same feature
rows, with the gate's paired bootstrap (:func:`registry_guard.gate.paired_bootstrap`, same seed,
resamples, confidence, non-inferiority margin and minimum evidence). ``ok`` when the CI lower bound
of ``metric(champion) - metric(previous)`` is above ``-margin``; ``degraded`` when the CI upper bound
is below ``-margin``; otherwise ``inconclusive`` — as is too little evidence, a state of its own.

Guard state: ``degraded`` if any check is degraded; ``ok`` if at least one check is ok and none is
degraded; otherwise ``inconclusive``. Checks that cannot run yet are ``skip`` with the reason.

:func:`population_stability_index` and :func:`evaluate_guard` are pure (arrays in, frozen report
out); :func:`check_champion` gathers the inputs from the registry and the warehouse, records one
``guard_checks`` row, and rolls a degraded champion back through :func:`registry.rollback` (the only
code that moves the alias), idempotently per champion version and cutoff.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sqlalchemy import Engine, insert, select

from registry_guard import registry
from registry_guard.gate import paired_bootstrap
from registry_guard.policy import GatePolicy, GuardPolicy
from rollguard.db.models import AliasAudit, GuardCheckRow

if TYPE_CHECKING:
    import pandas as pd

    from rollguard.settings import Settings

log = logging.getLogger(__name__)

GuardState = Literal["ok", "degraded", "inconclusive"]
GuardVerdict = Literal["ok", "degraded", "inconclusive", "skip"]
GUARD_STATES: frozenset[str] = frozenset({"ok", "degraded", "inconclusive"})

#: Version tag holding the evaluation cutoff (``YYYY-MM-DD``) of a trained version.
EVALUATION_CUTOFF_TAG = "rollguard.cutoff.evaluation"
#: Gate outcomes that count as "passed the gate".
PASSED_GATE: frozenset[str] = frozenset({"promote", "bootstrap"})
#: Share given to an empty bin so that ``ln(q / p)`` stays finite (a common choice; Yurdakul 2018).
PSI_EPSILON = 1e-4
SCORE_SHIFT = "score_shift"
REALIZED_QUALITY = "realized_quality"


# --- pure core -------------------------------------------------------------------------------------
def population_stability_index(
    reference: np.ndarray, live: np.ndarray, *, bins: int = 10, epsilon: float = PSI_EPSILON
) -> float:
    """PSI of ``live`` against ``reference`` over quantile bins of ``reference``.

    Bin edges are the ``k / bins`` quantiles of ``reference`` (deciles by default), with the outer
    edges opened to ``-inf`` and ``+inf`` so that live scores outside the reference range count;
    tied quantiles (a reference with many equal scores) merge their bins. Shares below ``epsilon``
    are raised to ``epsilon``. Source: Siddiqi 2006, *Credit Risk Scorecards*, ch. 8.

    Args:
        reference: shape ``(n,)``, scores at gate time (probabilities), ``n >= 1``, finite.
        live: shape ``(m,)``, live scores, ``m >= 1``, finite.
        bins: number of quantile bins (>= 2).
        epsilon: floor of a bin's share, > 0.

    Returns:
        PSI >= 0 (0 for identical samples; > 0.25 is a significant shift by Siddiqi's rule).

    Raises:
        ValueError: on an empty or non-finite input, ``bins < 2`` or ``epsilon <= 0``.
    """
    reference = np.asarray(reference, dtype=np.float64).ravel()
    live = np.asarray(live, dtype=np.float64).ravel()
    if bins < 2:
        raise ValueError(f"bins must be >= 2, not {bins}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, not {epsilon}")
    for name, arr in (("reference", reference), ("live", live)):
        if arr.size == 0:
            raise ValueError(f"{name} scores are empty")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} scores hold NaN or infinite values")
    inner = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    p = np.histogram(reference, edges)[0] / reference.size
    q = np.histogram(live, edges)[0] / live.size
    p = np.maximum(p, epsilon)
    q = np.maximum(q, epsilon)
    # Each term is >= 0 (q - p and ln(q / p) share their sign), so the sum is too.
    return float(np.sum((q - p) * np.log(q / p)))


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


def _realized_quality(
    champion: np.ndarray | None,
    previous: np.ndarray | None,
    labels: np.ndarray | None,
    policy: GatePolicy,
    skip_reason: str,
) -> GuardCheck:
    margin = policy.non_inferiority_margin
    metric = policy.primary_metric
    pct = f"{policy.confidence:.0%}"
    rule = (
        f"ok when the {pct} CI lower bound of {metric}(champion - previous) > -{margin}; "
        f"degraded when its upper bound < -{margin}"
    )
    if champion is None or previous is None or labels is None:
        return GuardCheck(
            REALIZED_QUALITY,
            "skip",
            rule,
            threshold=-margin,
            detail=skip_reason or "no matured labels",
        )
    champion = np.asarray(champion, dtype=np.float64).ravel()
    previous = np.asarray(previous, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.int64).ravel()
    n, pos = int(labels.size), int(labels.sum())
    if champion.shape != (n,) or previous.shape != (n,):
        raise ValueError(
            f"champion, previous and labels must have one shape; got {champion.shape}, "
            f"{previous.shape}, {labels.shape}"
        )
    if n < policy.min_rows or pos < policy.min_positives or pos == n:
        return GuardCheck(
            REALIZED_QUALITY,
            "inconclusive",
            rule,
            threshold=-margin,
            n_rows=n,
            n_positives=pos,
            detail=f"{n:,} labelled rows and {pos:,} positives: too little evidence "
            f"(needs {policy.min_rows:,} rows and {policy.min_positives:,} positives)",
        )
    if not (np.isfinite(champion).all() and np.isfinite(previous).all()):
        return GuardCheck(
            REALIZED_QUALITY,
            "inconclusive",
            rule,
            threshold=-margin,
            n_rows=n,
            n_positives=pos,
            detail="scores hold NaN or infinite values; the comparison cannot be made",
        )
    cmp = paired_bootstrap(
        champion,
        previous,
        labels,
        n_resamples=policy.n_resamples,
        seed=policy.seed,
        confidence=policy.confidence,
    )[metric]
    if cmp.ci_low > -margin:
        verdict: GuardVerdict = "ok"
    elif cmp.ci_high < -margin:
        verdict = "degraded"
    else:
        verdict = "inconclusive"
    return GuardCheck(
        REALIZED_QUALITY,
        verdict,
        rule,
        value=cmp.difference,
        threshold=-margin,
        ci_low=cmp.ci_low,
        ci_high=cmp.ci_high,
        n_rows=n,
        n_positives=pos,
        detail=f"{metric} {cmp.challenger:.4f} (champion) vs {cmp.champion:.4f} (previous), "
        f"difference {cmp.difference:+.4f}, {pct} CI [{cmp.ci_low:+.4f}, {cmp.ci_high:+.4f}] "
        f"on {n:,} rows, {pos:,} positives",
    )


def evaluate_guard(
    *,
    live_scores: np.ndarray | None,
    reference_scores: np.ndarray | None,
    champion_scores: np.ndarray | None,
    previous_scores: np.ndarray | None,
    labels: np.ndarray | None,
    gate_policy: GatePolicy,
    guard_policy: GuardPolicy,
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
        live_scores: shape ``(m,)``, the champion's newest production scores (probabilities), or
            None when there are none (the shift check is ``skip`` with ``shift_skip_reason``).
        reference_scores: shape ``(k,)``, the scores at gate time, or None (no reference version).
        champion_scores: shape ``(n,)``, the champion's logged production scores on rows whose
            label has matured; None skips the realized check with ``realized_skip_reason``.
        previous_scores: shape ``(n,)``, the previous champion's scores on the same rows.
        labels: shape ``(n,)``, 0/1 matured labels of those rows.
        gate_policy: bootstrap seed, resamples, confidence, margin and minimum evidence (shared
            with the gate). guard_policy: PSI threshold, bins and minimum predictions.
        *_version, *_cutoff: carried into the report for its readers.

    Returns:
        A :class:`GuardReport` with the state, both checks and one reason per check.

    Raises:
        ValueError: when the realized arrays have different shapes.
    """
    shift = _score_shift(live_scores, reference_scores, guard_policy, shift_skip_reason)
    realized = _realized_quality(
        champion_scores, previous_scores, labels, gate_policy, realized_skip_reason
    )
    checks = (shift, realized)
    verdicts = {c.verdict for c in checks}
    state: GuardState
    if "degraded" in verdicts:
        state = "degraded"
    elif "ok" in verdicts:
        state = "ok"
    else:
        state = "inconclusive"
    reasons = tuple(f"{c.name}: {c.verdict}: {c.detail}" for c in checks)
    return GuardReport(
        state=state,
        checks=checks,
        reasons=reasons,
        champion_version=champion_version,
        reference_version=reference_version,
        previous_version=previous_version,
        live_cutoff=live_cutoff,
        realized_cutoff=realized_cutoff,
        policy={
            "guard": guard_policy.model_dump(),
            "gate": {
                k: getattr(gate_policy, k)
                for k in (
                    "primary_metric",
                    "confidence",
                    "non_inferiority_margin",
                    "n_resamples",
                    "seed",
                    "min_rows",
                    "min_positives",
                )
            },
        },
    )


# --- I/O edge --------------------------------------------------------------------------------------
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


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    from usecases.cdnow.features import FEATURE_COLUMNS

    return frame.loc[:, list(FEATURE_COLUMNS)].astype("float64")


def _record(engine: Engine, values: dict[str, Any]) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(GuardCheckRow).values(**values).returning(GuardCheckRow.id)
            ).scalar_one()
        )


def check_champion(
    settings: Settings,
    *,
    client: Any,
    engine: Engine,
    act: bool = True,
    now: datetime | None = None,
) -> GuardResult:
    """Check the champion of ``settings.model_name`` now, record the result, and roll it back when
    it is degraded.

    Inputs gathered:

    - live scores: the champion's production predictions at its newest scored cutoff
      (:func:`domain.scoring.scored_cutoffs`, :func:`domain.scoring.load_predictions`);
    - reference scores: the champion's own scores at gate time, on the features at its evaluation
      cutoff (version tag ``rollguard.cutoff.evaluation``) rebuilt from the warehouse: the same
      model on both sides, so a large shift is a broken feature or serving path;
    - realized: at the newest cutoff whose label has matured (never before the champion's own
      evaluation cutoff), the champion's logged production scores when it served that week, else
      the champion re-scored on those rows, against the previous champion (``from_version`` of the
      promotion that made the champion) re-scored on the same rows. A champion forced past a
      failing gate is therefore judged on fresh matured labels in its first check.

    Args:
        settings: model name, horizon, policy path and rollback cooldown (seconds).
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

    A degraded champion is rolled back with :func:`registry.rollback` (actor ``guard``, fingerprint
    ``guard:<model>:<version>:<cutoff>``, compare-and-set on the checked version, the settings'
    cooldown). A refused rollback (cooldown, nothing to return to, champion moved meanwhile) is
    recorded in the row's reason; the state stays ``degraded``. A second check of the same version
    and cutoff replays the earlier rollback and moves nothing.
    """
    from domain.scoring import load_predictions, scored_cutoffs
    from domain.warehouse import ingested_weeks, load_records
    from registry_guard.policy import load_guard_policy, load_policy
    from rollguard.weeks import parse_iso_week
    from usecases.cdnow.features import LABEL, build_features, label_matured

    ts = now or datetime.now(UTC)
    model = settings.model_name
    gate_policy = load_policy(settings.gate_policy_path)
    guard_policy = load_guard_policy(settings.gate_policy_path)

    champion = registry.read_pointer(engine, model) or registry.alias_version(
        client, model, registry.CHAMPION
    )
    if champion is None:
        report = evaluate_guard(
            live_scores=None,
            reference_scores=None,
            champion_scores=None,
            previous_scores=None,
            labels=None,
            gate_policy=gate_policy,
            guard_policy=guard_policy,
            shift_skip_reason="no champion",
            realized_skip_reason="no champion",
        )
        reason = f"model {model!r} has no champion: nothing to guard"
        row_id = _record(
            engine,
            dict(
                model_name=model,
                champion_version=None,
                reference_version=None,
                previous_version=None,
                cutoff=None,
                state=report.state,
                reason=reason,
                report=report.to_json(),
                rolled_back_to=None,
                checked_at=ts,
            ),
        )
        return GuardResult(
            model, None, None, None, None, report.state, reason, report, None, None, row_id, ts
        )

    champ_mv = registry.get_version(client, model, champion, alias=registry.CHAMPION)
    move = _promoting_move(engine, model, champion)
    previous: str | None = move.from_version if move is not None else None

    # Score shift: the champion's live scores against its own scores at gate time (the features
    # at its evaluation cutoff, rebuilt from the warehouse). Same model on both sides: a shift is
    # a broken feature or serving path, not a difference between models.
    reference: str | None = champion
    shift_skip = ""
    cutoffs = scored_cutoffs(settings, champion)
    live_cutoff = cutoffs[-1] if cutoffs else None
    transactions = None

    def tx() -> pd.DataFrame:
        nonlocal transactions
        if transactions is None:
            transactions = load_records(settings, engine=engine)
        return transactions

    champion_model: registry.LoadedModel | None = None

    def champ() -> registry.LoadedModel:
        nonlocal champion_model
        if champion_model is None:
            champion_model = registry.load_version(client, model, champion, alias=registry.CHAMPION)
        return champion_model

    live_scores = reference_scores = None
    gate_cutoff = (champ_mv.tags or {}).get(EVALUATION_CUTOFF_TAG)
    if live_cutoff is None:
        shift_skip = f"version {champion} has no production predictions yet"
    elif not gate_cutoff:
        shift_skip = f"version {champion} has no tag {EVALUATION_CUTOFF_TAG}"
    else:
        live = load_predictions(settings, live_cutoff, champion)
        frame = build_features(
            tx(),
            date.fromisoformat(gate_cutoff),
            label_available=False,
            horizon_days=settings.horizon_days,
        )
        if live is None or frame.empty:
            shift_skip = f"no gate-time feature rows at {gate_cutoff} for version {champion}"
        else:
            live_scores = live["score"].to_numpy(dtype=np.float64)
            reference_scores = champ().predict(_features(frame))

    # Realized quality on the newest cutoff whose label has matured: the champion's logged
    # production scores there when it served that week, else the champion re-scored on those rows
    # (out of time for it: that cutoff is at or after its own evaluation cutoff), against the
    # previous champion re-scored on the same rows.
    champ_scores = prev_scores = labels = None
    realized_cutoff: date | None = None
    realized_skip = ""
    weeks = ingested_weeks(settings, engine=engine)
    matured = [
        c
        for c in (parse_iso_week(w) for w in weeks)
        if label_matured(c, weeks, settings.horizon_days) and c > parse_iso_week(weeks[0])
    ]
    if previous is None:
        realized_skip = f"version {champion} replaced no champion: nothing to compare with"
    elif not matured:
        realized_skip = f"no cutoff has a matured label yet (horizon {settings.horizon_days} days)"
    elif gate_cutoff and matured[-1] < date.fromisoformat(gate_cutoff):
        realized_skip = (
            f"labels have not matured past the evaluation cutoff {gate_cutoff} of {champion}"
        )
    else:
        realized_cutoff = matured[-1]
        rows = build_features(
            tx(), realized_cutoff, label_available=True, horizon_days=settings.horizon_days
        )
        logged = load_predictions(settings, realized_cutoff, champion)
        try:
            prev_model = registry.load_version(client, model, previous)
        except registry.RegistryError as exc:
            realized_skip = f"previous champion {previous} cannot be loaded: {exc}"
        else:
            if logged is not None:
                rows = rows.merge(
                    logged[["customer_id", "score"]], on="customer_id", how="inner", validate="1:1"
                )
                champ_scores = rows["score"].to_numpy(dtype=np.float64)
            else:
                champ_scores = champ().predict(_features(rows))
            labels = rows[LABEL].to_numpy(dtype=np.int64)
            prev_scores = prev_model.predict(_features(rows)) if len(rows) else np.zeros(0)

    report = evaluate_guard(
        live_scores=live_scores,
        reference_scores=reference_scores,
        champion_scores=champ_scores,
        previous_scores=prev_scores,
        labels=labels,
        gate_policy=gate_policy,
        guard_policy=guard_policy,
        shift_skip_reason=shift_skip,
        realized_skip_reason=realized_skip,
        champion_version=champion,
        reference_version=reference,
        previous_version=previous,
        live_cutoff=live_cutoff.isoformat() if live_cutoff else None,
        realized_cutoff=realized_cutoff.isoformat() if realized_cutoff else None,
    )
    cutoff_text = report.live_cutoff
    reason = f"champion {champion} is {report.state}: " + "; ".join(
        f"{c.name} {c.verdict}" for c in report.checks
    )
    degraded = [c for c in report.checks if c.verdict == "degraded"]
    if degraded:
        reason = f"champion {champion} is degraded: " + "; ".join(
            f"{c.name}: {c.detail}" for c in degraded
        )

    rollback_move: registry.AliasMove | None = None
    refused: str | None = None
    if report.state == "degraded":
        if not act:
            refused = "dry run: rollback not attempted"
        elif not guard_policy.auto_rollback:
            refused = "auto_rollback is off in the guard policy: rollback not attempted"
        else:
            try:
                rollback_move = registry.rollback(
                    reason,
                    "guard",
                    fingerprint=f"guard:{model}:{champion}:{cutoff_text}",
                    model_name=model,
                    expected=champion,
                    cooldown_seconds=settings.rollback_cooldown_seconds,
                    evidence={"guard": report.to_dict()},
                    client=client,
                    engine=engine,
                    now=ts,
                )
            except (registry.RollbackRefused, registry.ChampionMoved) as exc:
                refused = f"rollback refused: {exc}"
                log.warning("guard: %s", refused)
        if rollback_move is not None:
            if rollback_move.replayed:
                reason += (
                    f"; the rollback of version {champion} for cutoff {cutoff_text} was already "
                    f"made (to version {rollback_move.to_version}); nothing moved"
                )
            else:
                reason += f"; rolled back to version {rollback_move.to_version}"
        elif refused is not None:
            reason += f"; {refused}"

    rolled_back_to = (
        rollback_move.to_version
        if rollback_move is not None and not rollback_move.replayed
        else None
    )
    row_id = _record(
        engine,
        dict(
            model_name=model,
            champion_version=champion,
            reference_version=reference,
            previous_version=previous,
            cutoff=cutoff_text,
            state=report.state,
            reason=reason,
            report=report.to_json(),
            rolled_back_to=rolled_back_to,
            checked_at=ts,
        ),
    )
    return GuardResult(
        model_name=model,
        champion_version=champion,
        reference_version=reference,
        previous_version=previous,
        cutoff=cutoff_text,
        state=report.state,
        reason=reason,
        report=report,
        rollback=rollback_move,
        rollback_refused=refused,
        row_id=row_id,
        checked_at=ts,
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
