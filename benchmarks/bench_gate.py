"""How long one gate evaluation takes on the real CDNOW data (about 23,500 customers, 1,000 resamples).

Data: features and labels at the evaluation cutoff 1998-04-06 (label_available=True); champion and
challenger are XGBoost models trained quickly on earlier cutoffs (champion: 1997-12-01, challenger:
1998-02-02 and 1998-03-02; both label windows end before the evaluation cutoff).

Rows (median of --repeat runs, seconds, and ratio to the baseline measured in the same run):
  baseline    the naive paired bootstrap: a Python loop over resamples calling
              sklearn.metrics.average_precision_score, roc_auc_score and brier_score_loss for both
              models on y[idx], timed over --baseline-resamples resamples and scaled to 1,000
  bootstrap   domain.metrics.paired_bootstrap, 1,000 resamples (vectorised; same statistics)
  gate        registry_guard.gate.evaluate_gate: every check, with the same bootstrap on the total
              and on each segment of the use case's slice (new/returning: 3 bootstraps of 1,000
              resamples) — target < 5 s

Rerun: uv run python benchmarks/bench_gate.py [--repeat 3] [--baseline-resamples 100]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import date

import numpy as np


def median_seconds(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-resamples", type=int, default=100)
    args = parser.parse_args()

    import xgboost as xgb
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    from domain.metrics import paired_bootstrap, resample_indices
    from registry_guard.gate import ModelEvidence, evaluate_gate
    from registry_guard.policy import load_policy
    from registry_guard.registry import gate_inputs
    from usecases.cdnow import USECASE
    from usecases.cdnow.features import FEATURE_COLUMNS, LABEL

    transactions = USECASE.load_history().records

    def frame_at(cutoff: date):  # noqa: ANN202
        return USECASE.build_rows(transactions, cutoff, label_available=True)

    def fit(cutoffs: list[date]) -> xgb.Booster:
        import pandas as pd

        rows = pd.concat([frame_at(c) for c in cutoffs], ignore_index=True)
        dtrain = xgb.DMatrix(rows[list(FEATURE_COLUMNS)], label=rows[LABEL].astype(int))
        params = {
            "objective": "binary:logistic",
            "max_depth": 4,
            "eta": 0.1,
            "nthread": 2,
            "seed": 1,
        }
        return xgb.train(params, dtrain, num_boost_round=60)

    inputs = gate_inputs(frame_at(date(1998, 4, 6)), USECASE)
    x, y, values = inputs.features, inputs.labels, inputs.values
    champion = fit([date(1997, 12, 1)]).predict(xgb.DMatrix(x)).astype(np.float64)
    challenger = (
        fit([date(1998, 2, 2), date(1998, 3, 2)]).predict(xgb.DMatrix(x)).astype(np.float64)
    )
    policy = load_policy()
    n, b = len(y), policy.n_resamples

    def baseline() -> None:
        idx = resample_indices(n, args.baseline_resamples, policy.seed)
        for row in idx:
            yb = y[row]
            for s in (challenger[row], champion[row]):
                average_precision_score(yb, s)
                roc_auc_score(yb, s)
                brier_score_loss(yb, s)

    def bootstrap() -> None:
        paired_bootstrap(
            challenger, champion, y, n_resamples=b, seed=policy.seed, confidence=policy.confidence
        )

    decision = None

    def gate() -> None:
        nonlocal decision
        decision = evaluate_gate(
            ModelEvidence(challenger, "challenger", feature_names=FEATURE_COLUMNS),
            ModelEvidence(champion, "champion", feature_names=FEATURE_COLUMNS),
            y,
            values,
            inputs.slices,
            policy,
            task=USECASE.task,
            expected_features=FEATURE_COLUMNS,
            label=USECASE.label,
            budget=USECASE.targeting.budget,
        )

    base = median_seconds(baseline, 1) * b / args.baseline_resamples
    rows = [
        (
            f"baseline (sklearn loop, {args.baseline_resamples} resamples x{b // args.baseline_resamples})",
            base,
        ),
        (f"bootstrap (vectorised, {b} resamples)", median_seconds(bootstrap, args.repeat)),
        (f"gate (total + slice segments, {b} resamples each)", median_seconds(gate, args.repeat)),
    ]
    segments = {
        k: {str(seg): int((v == seg).sum()) for seg in np.unique(v)}
        for k, v in inputs.slices.items()
    }
    print(f"evaluation rows: {n:,}  positives: {int(y.sum()):,}  slices: {segments}")
    print(f"{'row':<52} {'seconds':>9} {'vs baseline':>12}")
    for label, seconds in rows:
        print(f"{label:<52} {seconds:>9.3f} {seconds / base:>11.3f}x")
    assert decision is not None
    primary = decision.check("primary_non_inferiority")
    print(
        f"decision: {decision.outcome} ({decision.reason_code}); AP difference "
        f"{primary.value:+.4f}, 95% CI [{primary.ci_low:+.4f}, {primary.ci_high:+.4f}]"
    )
    verdict = "met" if rows[2][1] < 5.0 else "NOT met"
    print(f"target: gate under 5 s -> {verdict}")
    print("rerun: uv run python benchmarks/bench_gate.py --repeat 3 --baseline-resamples 100")


if __name__ == "__main__":
    main()
