"""How long the weekly monitoring computation takes, against Evidently on the unsampled data.

Two inputs, for a binary-classification use case (``--usecase``, default ``ROLLGUARD_USECASE``):
  week    one real week of the use case at ``--cutoff``: the reference is the training rows of a
          champion (8 weekly fit cutoffs before the week's evaluation cutoff), the current side
          the week's rows; the scores come from a small
          XGBoost model fitted on the reference (not timed) and the week's matured labels give
          quality and KPIs.
  synth   1,000,000 synthetic rows per side with the same numerical feature columns (reference
          rows drawn with replacement, the current side's values scaled by a random factor around
          1.05) and 1,000,000 scores and labels.

Rows (median of --repeat runs, seconds):
  baseline  Evidently 0.7 ``Report([DataDriftPreset(columns=features)])`` on the UNSAMPLED
            reference and current frames (what a straightforward use of Evidently costs)
  monitor   the monitor step's computation with the sample cap (ROLLGUARD_MONITOR_SAMPLE_ROWS,
            default 50,000): data drift (Evidently on the seeded samples), score drift (PSI on
            every score + Evidently ValueDrift on the sample), quality, KPIs, the store write
            (SQLite) and both HTML reports. MLflow logging and model loading are not included.

Rerun: uv run python benchmarks/bench_monitoring.py --cutoff 1997-09-01 [--usecase NAME] [--repeat 3]
       [--sample-rows 50000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def median_seconds(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evidently_unsampled(reference: pd.DataFrame, current: pd.DataFrame, cols: list[str]) -> Any:
    """Evidently on every row (the baseline), columns declared numerical."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=cols)
    return Report([DataDriftPreset(columns=cols)]).run(
        Dataset.from_pandas(current[cols], data_definition=definition),
        Dataset.from_pandas(reference[cols], data_definition=definition),
    )


def monitor_once(inputs: dict[str, Any], mapping: Any, cap: int, engine: Any, folder: Path) -> int:
    from monitoring import compute
    from monitoring.results import replace_week

    drift = compute.data_drift_figures(
        inputs["reference"], inputs["current"], mapping, sample_rows=cap, seed=1
    )
    score = compute.score_drift_figures(
        inputs["gate_scores"], inputs["scores"], sample_rows=cap, seed=1
    )
    quality = compute.quality_figures(
        inputs["scores"],
        inputs["labels"],
        inputs["targeted"],
        expected_average_precision=0.6,
        expected_roc_auc=0.75,
        rule=compute.LiveQualityRule(min_rows=2000, min_positives=100),
    )
    kpi = compute.kpi_figures(
        inputs["predictions"], inputs["truth"], key="key", label="y", value="value"
    )
    figures = drift.figures + score.figures + quality + kpi
    replace_week(engine, model_name="bench", week="w", model_version="1", figures=figures)
    for name, result in (("data_drift", drift), ("score_drift", score)):
        if result.snapshot is not None:
            result.snapshot.save_html(str(folder / f"{name}.html"))
    return len(figures)


def with_scores(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    gate: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    value: np.ndarray,
    budget: float,
) -> dict[str, Any]:
    from domain.metrics import targeted_mask

    targeted = targeted_mask(scores, budget)
    ids = np.arange(len(scores))
    return {
        "reference": reference,
        "current": current,
        "gate_scores": gate,
        "scores": scores,
        "labels": labels,
        "targeted": targeted,
        "predictions": pd.DataFrame({"key": ids, "targeted": targeted}),
        "truth": pd.DataFrame({"key": ids, "y": labels, "value": value}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample-rows", type=int, default=50_000)
    parser.add_argument("--synthetic-rows", type=int, default=1_000_000)
    parser.add_argument("--usecase", default=None, help="default: ROLLGUARD_USECASE")
    parser.add_argument("--cutoff", type=date.fromisoformat, required=True, help="a Monday")
    args = parser.parse_args()

    import xgboost as xgb

    from monitoring.compute import ColumnMapping
    from rollguard import db
    from rollguard.settings import get_settings
    from rollguard.usecase import load_usecase

    usecase = load_usecase(args.usecase or get_settings().usecase)
    if not usecase.is_classification:
        raise SystemExit(f"use case {usecase.name}: this benchmark times a classification week")
    mapping = ColumnMapping.from_usecase(usecase)
    cols = list(mapping.numerical)
    label, value = usecase.label.column, usecase.value.column
    data = usecase.load_history().records
    evaluation = args.cutoff - timedelta(days=max(usecase.label.horizon_days, 7))
    fit = [evaluation - timedelta(weeks=4 + k) for k in range(8)]
    reference = pd.concat(
        [usecase.build_rows(data, c, label_available=True) for c in fit], ignore_index=True
    )
    week = usecase.build_rows(data, args.cutoff, label_available=True)
    gate_rows = usecase.build_rows(data, evaluation, label_available=False)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "eta": 0.1, "nthread": 2, "seed": 1},
        xgb.DMatrix(usecase.feature_frame(reference), label=reference[label].astype(int),
                    enable_categorical=True),
        num_boost_round=60,
    )  # fmt: skip

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return booster.predict(xgb.DMatrix(usecase.feature_frame(frame), enable_categorical=True))

    budget = usecase.targeting.budget
    real = with_scores(
        reference,
        week,
        predict(gate_rows),
        predict(week),
        week[label].to_numpy(dtype=np.int64),
        week[value].to_numpy(dtype=np.float64),
        budget,
    )
    rng = np.random.default_rng(7)
    n = args.synthetic_rows
    pool = reference[cols].to_numpy(dtype=np.float64)
    syn_ref = pd.DataFrame(pool[rng.integers(0, len(pool), n)], columns=cols)
    syn_cur = pd.DataFrame(
        pool[rng.integers(0, len(pool), n)] * rng.normal(1.05, 0.05, (n, 1)), columns=cols
    )
    syn_mapping = ColumnMapping(tuple(cols))
    syn_scores = rng.beta(2, 8, n)
    synthetic = with_scores(
        syn_ref,
        syn_cur,
        rng.beta(2, 8, n),
        syn_scores,
        rng.binomial(1, syn_scores).astype(np.int64),
        rng.gamma(2.0, 20.0, n),
        budget,
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'store.db'}"
        db.upgrade(url)
        engine = db.make_engine(url)
        for name, inputs, cmap, repeat in (
            ("week", real, mapping, args.repeat),
            ("synth", synthetic, syn_mapping, 1),
        ):
            ref, cur = inputs["reference"], inputs["current"]
            base = median_seconds(
                lambda ref=ref, cur=cur: evidently_unsampled(ref, cur, cols), repeat
            )
            mine = median_seconds(
                lambda inputs=inputs, cmap=cmap: monitor_once(
                    inputs, cmap, args.sample_rows, engine, Path(tmp)
                ),
                repeat,
            )
            rows.append((name, len(ref), len(cur), base, mine))
        engine.dispose()

    print(
        f"weekly monitoring, sample cap {args.sample_rows:,} rows per side, "
        f"{usecase.name} week {args.cutoff} (median of {args.repeat}) and {n:,} synthetic rows "
        "(1 run)"
    )
    print(
        f"{'input':<6} {'ref rows':>9} {'cur rows':>9} {'baseline s':>11} {'monitor s':>10} "
        f"{'monitor/baseline':>17}"
    )
    for name, n_ref, n_cur, base, mine in rows:
        print(f"{name:<6} {n_ref:>9,} {n_cur:>9,} {base:>11.2f} {mine:>10.2f} {mine / base:>17.2f}")
    print("baseline = Evidently DataDriftPreset on the unsampled frames (drift only)")
    print("monitor  = drift + score drift + quality + KPIs + store write + 2 HTML reports, sampled")
    print(f"\nrerun: uv run python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
