"""The validation gate: a pure function from scores on the same evaluation rows to a decision.

Method
------
Challenger and champion are compared on the *same* out-of-time evaluation rows with the **paired
percentile bootstrap** (Efron & Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall 1993,
ch. 13 "Confidence intervals based on bootstrap percentiles"; the paired design follows ch. 7 of the
same book on comparing two statistics computed on one sample). One resample is a draw of ``n`` row
indices with replacement; both models are scored on that same draw, and the statistic is the
difference ``metric(challenger) - metric(champion)``. The ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles of the ``B`` differences form the confidence interval.

**Non-inferiority** (the promotion rule): promote when the lower bound of the CI of the difference in
the primary metric is above ``-margin``. Two equally good models pass, so the fresher one wins ties;
identical models give a CI of exactly ``[0, 0]`` and pass.

Vectorisation: the ``(B, n)`` resample index matrix is turned into a ``(B, n)`` matrix of
multiplicities (how often each row is drawn); a resample's metric equals the metric of the full
sample with those multiplicities as sample weights. Rows are sorted by score once per model, and
average precision and ROC AUC of every resample come from cumulative sums of weighted positives and
negatives at the ends of tied-score groups — the same step-wise AP and trapezoidal AUC as
:func:`sklearn.metrics.average_precision_score` and :func:`sklearn.metrics.roc_auc_score`
(``tests/unit/test_gate_bootstrap.py`` checks the equality).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from registry_guard.policy import GatePolicy

Outcome = Literal["promote", "reject", "bootstrap"]
Verdict = Literal["pass", "fail", "skip", "info"]

#: Metrics computed for every bootstrap resample.
BOOTSTRAP_METRICS: tuple[str, ...] = ("average_precision", "roc_auc", "brier")

#: Resamples processed at once; bounds memory at about ``_CHUNK * n * 8`` bytes per array.
_CHUNK = 100


# --- inputs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEvidence:
    """What the gate knows about one model.

    Attributes:
        scores: shape ``(n,)``, predicted probability of the positive class for each evaluation row,
            in [0, 1].
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
            ``worse_than_random``.
        reasons: readable sentences, one per failed (or decisive) check.
        checks: every check with value, CI, threshold and verdict.
        n_rows, n_positives: size of the evaluation set.
        policy: the policy used (as a plain mapping).
    """

    outcome: Outcome
    reason_code: str
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    n_rows: int
    n_positives: int
    challenger_version: str | None
    champion_version: str | None
    policy: dict = field(hash=False, compare=False)

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
            f"- evaluation rows: {self.n_rows:,}, positives: {self.n_positives:,}",
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
        return "\n".join(lines) + "\n"


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


# --- vectorised bootstrap ------------------------------------------------------------------------------
def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """The bootstrap resample index matrix.

    Returns:
        shape ``(n_resamples, n)``, int64 row indices drawn uniformly with replacement from
        ``range(n)`` by ``numpy.random.default_rng(seed)`` (reproducible for a given seed).
    """
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def multiplicities(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each row is drawn in each resample.

    Args:
        indices: shape ``(B, k)``, row indices in ``range(n)``.

    Returns:
        shape ``(B, n)`` int32 counts; each row sums to ``k``.
    """
    b = indices.shape[0]
    flat = (indices + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    # int32 halves the memory traffic of the cumulative sums; counts never exceed k < 2**31.
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.int32)


def weighted_metrics(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict:
    """AP, ROC AUC, Brier score and prevalence for many weightings of one sample at once.

    Args:
        scores: shape ``(n,)``, probabilities.
        labels: shape ``(n,)``, 0/1.
        weights: shape ``(B, n)``, non-negative integer multiplicities (one row per resample).

    Returns:
        ``{"average_precision", "roc_auc", "brier", "prevalence"}``, each of shape ``(B,)``. AP is
        NaN for a resample without positives, AUC for one without positives or negatives (as
        scikit-learn would refuse them).
    """
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = labels[order].astype(bool)
    w = weights[:, order]
    n_all = weights.sum(axis=1).astype(np.float64)
    # Thresholds are the distinct scores (sklearn.metrics._ranking._binary_clf_curve): curves are
    # read at the last row of each group of tied scores. Only groups holding a positive change AP
    # (recall steps) and AUC (positives ranked above negatives), so the sums run over those alone.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:] - 1, s.size - 1]
    pos_rows = np.flatnonzero(y)
    group_of_pos = np.searchsorted(starts, pos_rows, side="right") - 1
    last = (
        np.flatnonzero(np.r_[group_of_pos[1:] != group_of_pos[:-1], True])
        if pos_rows.size
        else np.zeros(0, dtype=np.int64)
    )
    pos_groups = group_of_pos[last]
    rows_cum = np.cumsum(w, axis=1, dtype=np.int32)
    rows_to_end = rows_cum[:, ends[pos_groups]].astype(np.float64)
    before = starts[pos_groups] - 1
    rows_before = np.where(before >= 0, rows_cum[:, np.maximum(before, 0)], 0)
    tp_to_end = np.cumsum(w[:, pos_rows], axis=1, dtype=np.int32)[:, last].astype(np.float64)
    w_pos = np.diff(tp_to_end, axis=1, prepend=0.0)
    neg_in_group = rows_to_end - rows_before - w_pos
    pos = tp_to_end[:, -1] if pos_groups.size else np.zeros(w.shape[0])
    neg = n_all - pos
    fp_to_end = rows_to_end - tp_to_end
    precision = np.divide(
        tp_to_end, rows_to_end, out=np.zeros_like(tp_to_end), where=rows_to_end > 0
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (w_pos * precision).sum(axis=1) / pos
        # AUC = P(score of a positive > score of a negative) + 0.5 P(tie) (Mann-Whitney), which
        # equals the trapezoidal area under the ROC curve.
        auc = (w_pos * (neg[:, None] - fp_to_end + 0.5 * neg_in_group)).sum(axis=1) / (pos * neg)
        brier = weights.astype(np.float64) @ ((scores - labels) ** 2) / n_all
        prevalence = pos / n_all
    ap = np.where(pos > 0, ap, np.nan)
    auc = np.where((pos > 0) & (neg > 0), auc, np.nan)
    return {"average_precision": ap, "roc_auc": auc, "brier": brier, "prevalence": prevalence}


@dataclass(frozen=True)
class PairedComparison:
    """Paired-bootstrap comparison of one metric.

    Attributes:
        challenger, champion: metric on the full sample (scikit-learn).
        difference: ``challenger - champion`` on the full sample.
        ci_low, ci_high: percentile CI of the difference at the requested confidence.
        n_degenerate: resamples where the metric is undefined (left out of the quantiles).
    """

    metric: str
    challenger: float
    champion: float
    difference: float
    ci_low: float
    ci_high: float
    n_degenerate: int


def paired_bootstrap(
    challenger: np.ndarray,
    champion: np.ndarray,
    labels: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, PairedComparison]:
    """Paired percentile bootstrap of ``metric(challenger) - metric(champion)`` for AP, AUC, Brier.

    Both score vectors are evaluated on the same resamples (Efron & Tibshirani 1993, ch. 13).
    Swapping ``challenger`` and ``champion`` negates every difference and mirrors the CI.

    Args:
        challenger, champion: shape ``(n,)`` probabilities on the same rows.
        labels: shape ``(n,)`` 0/1.
        n_resamples: number of resamples ``B``.
        seed: seed of :func:`resample_indices`.
        confidence: two-sided level of the percentile interval.

    Returns:
        One :class:`PairedComparison` per metric in :data:`BOOTSTRAP_METRICS`, plus
        ``"challenger_vs_base_rate"``: AP of the challenger minus prevalence (AP of random scores).

    Raises:
        ValueError: on mismatched shapes, or when the labels hold a single class.
    """
    challenger = np.asarray(challenger, dtype=np.float64)
    champion = np.asarray(champion, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    if challenger.shape != (n,) or champion.shape != (n,):
        raise ValueError(f"scores must have shape ({n},); got {challenger.shape}, {champion.shape}")
    if labels.min(initial=0) == labels.max(initial=0):
        raise ValueError("labels hold a single class; AP and AUC are undefined")
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in BOOTSTRAP_METRICS}
    vs_base: list[np.ndarray] = []
    indices = resample_indices(n, n_resamples, seed)
    for start in range(0, n_resamples, _CHUNK):
        w = multiplicities(indices[start : start + _CHUNK], n)
        a = weighted_metrics(challenger, labels, w)
        b = weighted_metrics(champion, labels, w)
        for m in BOOTSTRAP_METRICS:
            diffs[m].append(a[m] - b[m])
        vs_base.append(a["average_precision"] - a["prevalence"])
    point = {
        "average_precision": (
            average_precision_score(labels, challenger),
            average_precision_score(labels, champion),
        ),
        "roc_auc": (roc_auc_score(labels, challenger), roc_auc_score(labels, champion)),
        "brier": (brier_score_loss(labels, challenger), brier_score_loss(labels, champion)),
    }
    alpha = 1.0 - confidence
    out: dict[str, PairedComparison] = {}
    for m in BOOTSTRAP_METRICS:
        d = np.concatenate(diffs[m])
        lo, hi = _percentile_ci(d, alpha)
        ch, cp = (float(v) for v in point[m])
        out[m] = PairedComparison(m, ch, cp, ch - cp, lo, hi, int(np.isnan(d).sum()))
    d = np.concatenate(vs_base)
    lo, hi = _percentile_ci(d, alpha)
    prevalence = float(labels.mean())
    ap = float(point["average_precision"][0])
    out["challenger_vs_base_rate"] = PairedComparison(
        "challenger_vs_base_rate", ap, prevalence, ap - prevalence, lo, hi, int(np.isnan(d).sum())
    )
    return out


def _percentile_ci(d: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = d[~np.isnan(d)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# --- point metrics ---------------------------------------------------------------------------------
def top_share_mask(scores: np.ndarray, budget: float) -> np.ndarray:
    """Boolean mask of the ``ceil(budget * n)`` highest scores (ties broken by row order).

    Args:
        scores: shape ``(n,)``. budget: share in (0, 1].
    """
    n = scores.shape[0]
    k = max(1, math.ceil(budget * n))
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


def lift_at_budget(scores: np.ndarray, labels: np.ndarray, budget: float) -> float:
    """Positive rate among the top ``budget`` share by score divided by the overall positive rate.

    Returns NaN when there are no positives.
    """
    base = float(np.mean(labels))
    if base == 0:
        return math.nan
    return float(np.mean(labels[top_share_mask(scores, budget)])) / base


def revenue_share_at_budget(scores: np.ndarray, values: np.ndarray, budget: float) -> float:
    """Share of all horizon revenue (USD) that comes from the top ``budget`` share by score."""
    total = float(np.sum(values))
    if total <= 0:
        return math.nan
    return float(np.sum(values[top_share_mask(scores, budget)])) / total


# --- the gate ----------------------------------------------------------------------------------------
def _invalid_scores(scores: np.ndarray, n: int) -> str | None:
    if scores.shape != (n,):
        return f"expected {n} scores, got shape {scores.shape}"
    n_nan = int(np.isnan(scores).sum())
    n_out = int(((scores < 0) | (scores > 1)).sum())
    if n_nan or n_out:
        return f"{n_nan} NaN and {n_out} out-of-range (outside [0, 1]) scores of {n}"
    return None


def evaluate_gate(
    challenger: ModelEvidence,
    champion: ModelEvidence | ChampionUnavailable | None,
    labels: np.ndarray,
    values: np.ndarray,
    returning: np.ndarray,
    policy: GatePolicy,
    *,
    expected_features: Sequence[str],
) -> GateDecision:
    """Decide whether the challenger may replace the champion.

    Args:
        challenger: evidence of the new model; ``scores`` shape ``(n,)``.
        champion: evidence of the serving model on the same rows; ``None`` when there is no champion
            (outcome ``bootstrap`` if the challenger is sound); :class:`ChampionUnavailable` when a
            champion exists but could not be loaded or scored (always a reject, reason
            ``champion_unavailable``; a person may still promote with ``--force``).
        labels: shape ``(n,)``, 0/1 labels of the out-of-time evaluation rows.
        values: shape ``(n,)``, business value per row (USD revenue in the horizon); reported.
        returning: shape ``(n,)`` bool, slice membership (returning customer, else new).
        policy: thresholds.
        expected_features: input names the serving API sends, in order.

    Returns:
        A frozen :class:`GateDecision`. Pure: same inputs, same decision.

    Raises:
        ValueError: when ``labels``, ``values`` and ``returning`` do not have one entry per row.
    """
    labels = np.asarray(labels, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    returning = np.asarray(returning, dtype=bool)
    n = labels.shape[0]
    if values.shape != (n,) or returning.shape != (n,):
        raise ValueError(f"labels, values and returning must all have shape ({n},)")
    n_pos = int(labels.sum())
    chal_scores = np.asarray(challenger.scores, dtype=np.float64)
    checks: list[Check] = []
    champion_version = champion.version if champion is not None else None

    def decide(outcome: Outcome, code: str, reasons: list[str]) -> GateDecision:
        return GateDecision(
            outcome=outcome,
            reason_code=code,
            reasons=tuple(reasons),
            checks=tuple(checks),
            n_rows=n,
            n_positives=n_pos,
            challenger_version=challenger.version,
            champion_version=champion_version,
            policy=policy.model_dump(),
        )

    # 1. The challenger's scores and interface: nothing else is meaningful without them.
    bad = _invalid_scores(chal_scores, n)
    checks.append(
        Check(
            "scores_valid",
            "fail" if bad else "pass",
            "no NaN and all scores in [0, 1]",
            detail=bad or f"{n} finite scores in [0, 1]",
        )
    )
    if bad:
        return decide("reject", "invalid_scores", [f"challenger scores are invalid: {bad}"])
    expected = tuple(expected_features)
    got = challenger.feature_names
    if got is None:
        sig_detail = "the model has no signature"
    elif tuple(got) != expected:
        missing = [f for f in expected if f not in got]
        extra = [f for f in got if f not in expected]
        sig_detail = (
            f"missing {missing}, unexpected {extra}"
            if missing or extra
            else "same features in a different order"
        )
    else:
        sig_detail = ""
    checks.append(
        Check(
            "signature_compatible",
            "fail" if sig_detail else "pass",
            "signature inputs equal the features the API serves, in order",
            value=float(len(got or ())),
            threshold=float(len(expected)),
            detail=sig_detail or f"{len(expected)} features match",
        )
    )
    if sig_detail:
        return decide("reject", "signature_mismatch", [f"signature incompatible: {sig_detail}"])

    # 2. Enough evidence to judge at all.
    enough = n >= policy.min_rows and n_pos >= policy.min_positives
    checks.append(
        Check(
            "evidence",
            "pass" if enough else "fail",
            f"at least {policy.min_rows} rows and {policy.min_positives} positives",
            value=float(n),
            threshold=float(policy.min_rows),
            detail=f"{n} rows, {n_pos} positives",
        )
    )
    if not enough:
        return decide(
            "reject",
            "insufficient_evidence",
            [
                f"not enough evidence: {n} rows and {n_pos} positives; the policy needs at least "
                f"{policy.min_rows} rows and {policy.min_positives} positives"
            ],
        )

    failures: list[tuple[str, str]] = []
    size = challenger.size_bytes
    if size is None:
        checks.append(
            Check(
                "model_size",
                "skip",
                f"size <= {policy.max_model_bytes} bytes",
                detail="size unknown",
            )
        )
    else:
        ok = size <= policy.max_model_bytes
        checks.append(
            Check(
                "model_size",
                "pass" if ok else "fail",
                f"size <= {policy.max_model_bytes} bytes",
                value=float(size),
                threshold=float(policy.max_model_bytes),
                detail=f"{size:,} bytes",
            )
        )
        if not ok:
            failures.append(
                (
                    "model_too_large",
                    f"model is {size:,} bytes, above the limit {policy.max_model_bytes:,}",
                )
            )

    if isinstance(champion, ChampionUnavailable):
        checks.append(
            Check(
                "champion_available",
                "fail",
                "the champion loads and scores",
                detail=champion.reason,
            )
        )
        reasons = [
            f"champion version {champion.version} cannot be loaded or scored: {champion.reason}"
        ] + [r for _, r in failures]
        return decide("reject", "champion_unavailable", reasons)

    champ_scores = (
        np.asarray(champion.scores, dtype=np.float64)
        if champion is not None
        else np.full(n, float(labels.mean()))  # the constant base-rate model
    )
    if champion is not None:
        bad_champ = _invalid_scores(champ_scores, n)
        if bad_champ:
            checks.append(
                Check(
                    "champion_available",
                    "fail",
                    "the champion loads and scores",
                    detail=f"champion scores are invalid: {bad_champ}",
                )
            )
            return decide(
                "reject",
                "champion_unavailable",
                [f"champion version {champion.version} cannot be scored: {bad_champ}"]
                + [r for _, r in failures],
            )
        checks.append(Check("champion_available", "pass", "the champion loads and scores"))

    boot = paired_bootstrap(
        chal_scores,
        champ_scores,
        labels,
        n_resamples=policy.n_resamples,
        seed=policy.seed,
        confidence=policy.confidence,
    )
    pct = f"{policy.confidence:.0%}"
    base = boot["challenger_vs_base_rate"]
    ok = base.ci_low > 0
    checks.append(
        Check(
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
    )
    if not ok:
        failures.append(
            (
                "worse_than_random",
                f"challenger AP {base.challenger:.4f} is not "
                f"credibly above the base rate {base.champion:.4f}",
            )
        )

    budget = policy.targeting_budget
    chal_rev = revenue_share_at_budget(chal_scores, values, budget)
    if champion is None:
        checks.append(
            Check(
                "revenue_share_at_budget",
                "info",
                f"share of horizon revenue from the top {budget:.0%} by score",
                value=_none_if_nan(chal_rev),
                challenger=_none_if_nan(chal_rev),
            )
        )
        if failures:
            return decide("reject", failures[0][0], [r for _, r in failures])
        return decide(
            "bootstrap",
            "no_champion",
            [
                f"no champion yet: version {challenger.version} becomes the first champion "
                f"(AP {base.challenger:.4f}, base rate {base.champion:.4f})"
            ],
        )

    # 3. Non-inferiority on the primary metric.
    margin = policy.non_inferiority_margin
    prim = boot[policy.primary_metric]
    ok = prim.ci_low > -margin
    checks.append(
        Check(
            "primary_non_inferiority",
            "pass" if ok else "fail",
            f"{pct} CI lower bound of {prim.metric}(challenger - champion) > -{margin}",
            value=prim.difference,
            threshold=-margin,
            ci_low=prim.ci_low,
            ci_high=prim.ci_high,
            challenger=prim.challenger,
            champion=prim.champion,
            detail=f"{prim.metric} {prim.challenger:.4f} vs {prim.champion:.4f}, difference "
            f"{prim.difference:+.4f}, CI [{prim.ci_low:+.4f}, {prim.ci_high:+.4f}]",
        )
    )
    if not ok:
        failures.append(
            (
                "inferior",
                f"{prim.metric} may be worse by more than {margin}: "
                f"difference {prim.difference:+.4f}, {pct} CI "
                f"[{prim.ci_low:+.4f}, {prim.ci_high:+.4f}]",
            )
        )

    # 4. Guardrails, judged on the point difference (their CI is reported); the statistical
    # evidence for promotion is carried by the primary test, guardrails bound the size of harm.
    auc = boot["roc_auc"]
    ok = auc.difference >= -policy.auc_margin
    checks.append(
        Check(
            "guardrail_roc_auc",
            "pass" if ok else "fail",
            f"ROC AUC(challenger - champion) >= -{policy.auc_margin}",
            value=auc.difference,
            threshold=-policy.auc_margin,
            ci_low=auc.ci_low,
            ci_high=auc.ci_high,
            challenger=auc.challenger,
            champion=auc.champion,
        )
    )
    if not ok:
        failures.append(
            (
                "guardrail_failed",
                f"ROC AUC drops by {-auc.difference:.4f} (limit {policy.auc_margin})",
            )
        )
    br = boot["brier"]
    ok = br.difference <= policy.brier_margin
    checks.append(
        Check(
            "guardrail_brier",
            "pass" if ok else "fail",
            f"Brier(challenger - champion) <= {policy.brier_margin}",
            value=br.difference,
            threshold=policy.brier_margin,
            ci_low=br.ci_low,
            ci_high=br.ci_high,
            challenger=br.challenger,
            champion=br.champion,
        )
    )
    if not ok:
        failures.append(
            (
                "guardrail_failed",
                f"Brier score rises by {br.difference:.4f} (limit {policy.brier_margin})",
            )
        )
    lift_a = lift_at_budget(chal_scores, labels, budget)
    lift_b = lift_at_budget(champ_scores, labels, budget)
    rel = lift_a / lift_b - 1.0 if lift_b > 0 else math.inf
    ok = rel >= -policy.lift_relative_margin
    checks.append(
        Check(
            "guardrail_lift",
            "pass" if ok else "fail",
            f"lift at top {budget:.0%}: challenger/champion - 1 >= -{policy.lift_relative_margin}",
            value=rel,
            threshold=-policy.lift_relative_margin,
            challenger=lift_a,
            champion=lift_b,
        )
    )
    if not ok:
        failures.append(
            (
                "guardrail_failed",
                f"lift at the top {budget:.0%} drops by "
                f"{-rel:.1%} ({lift_a:.2f} vs {lift_b:.2f}; limit "
                f"{policy.lift_relative_margin:.0%})",
            )
        )
    lat_a, lat_b = challenger.latency_seconds_per_10k, champion.latency_seconds_per_10k
    lat_rule = (
        f"scoring time <= {policy.latency_ratio_max}x the champion's (differences under "
        f"{policy.latency_floor_seconds}s per 10k rows are noise)"
    )
    if lat_a is None or lat_b is None or lat_b <= 0:
        checks.append(Check("guardrail_latency", "skip", lat_rule, detail="latency not measured"))
    else:
        ratio = lat_a / lat_b
        ok = ratio <= policy.latency_ratio_max or lat_a - lat_b < policy.latency_floor_seconds
        checks.append(
            Check(
                "guardrail_latency",
                "pass" if ok else "fail",
                lat_rule,
                value=ratio,
                threshold=policy.latency_ratio_max,
                challenger=lat_a,
                champion=lat_b,
                detail=f"{lat_a:.4f}s vs {lat_b:.4f}s per 10,000 rows",
            )
        )
        if not ok:
            failures.append(
                (
                    "guardrail_failed",
                    f"scoring is {ratio:.2f}x slower than the "
                    f"champion (limit {policy.latency_ratio_max}x)",
                )
            )
    champ_rev = revenue_share_at_budget(champ_scores, values, budget)
    checks.append(
        Check(
            "revenue_share_at_budget",
            "info",
            f"share of horizon revenue from the top {budget:.0%} by score",
            value=_none_if_nan(chal_rev - champ_rev),
            challenger=_none_if_nan(chal_rev),
            champion=_none_if_nan(champ_rev),
        )
    )

    # 5. The same non-inferiority check on each slice.
    for offset, (name, mask) in enumerate((("new", ~returning), ("returning", returning)), 1):
        rows, pos = int(mask.sum()), int(labels[mask].sum())
        rule = (
            f"{pct} CI lower bound of {policy.primary_metric} difference > -{policy.slice_margin}"
        )
        if rows < policy.slice_min_rows or pos < policy.slice_min_positives or pos == rows:
            checks.append(
                Check(
                    f"slice_{name}",
                    "skip",
                    rule,
                    detail=f"{rows} rows and {pos} positives: too few "
                    f"to judge (needs {policy.slice_min_rows} and {policy.slice_min_positives})",
                )
            )
            continue
        sb = paired_bootstrap(
            chal_scores[mask],
            champ_scores[mask],
            labels[mask],
            n_resamples=policy.n_resamples,
            seed=policy.seed + offset,
            confidence=policy.confidence,
        )[policy.primary_metric]
        ok = sb.ci_low > -policy.slice_margin
        checks.append(
            Check(
                f"slice_{name}",
                "pass" if ok else "fail",
                rule,
                value=sb.difference,
                threshold=-policy.slice_margin,
                ci_low=sb.ci_low,
                ci_high=sb.ci_high,
                challenger=sb.challenger,
                champion=sb.champion,
                detail=f"{rows} rows, {pos} positives",
            )
        )
        if not ok:
            failures.append(
                (
                    "slice_regressed",
                    f"{name} customers: {sb.metric} difference "
                    f"{sb.difference:+.4f}, {pct} CI [{sb.ci_low:+.4f}, "
                    f"{sb.ci_high:+.4f}] is below -{policy.slice_margin}",
                )
            )

    if failures:
        return decide("reject", failures[0][0], [r for _, r in failures])
    return decide(
        "promote",
        "non_inferior",
        [
            f"challenger is non-inferior: {prim.metric} difference {prim.difference:+.4f}, {pct} CI "
            f"[{prim.ci_low:+.4f}, {prim.ci_high:+.4f}] above -{margin}; all guardrails and slices pass"
        ],
    )


def _none_if_nan(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)
