"""How long training takes on the real CDNOW data, and how much memory it needs.

Each step runs in a fresh subprocess (so peak memory is its own: ``resource.getrusage`` max RSS).
Rows (seconds of the step itself, peak RSS of the process, ratio to the baseline in the same run):
  baseline    usecases.cdnow.features.build_features at one cutoff
  features_8  build_features for 8 cutoffs (a default training set plus evaluation)
  train       one training without tuning (XGBoost fit, metrics), default settings
  shap        the SHAP step of a run: TreeExplainer on 2,000 evaluation rows + additivity check
  tune_30     one Optuna study of 30 trials (SQLite storage in a temporary folder)
  run_reuse   a whole `retrain` without tuning: features, fit, SHAP, MLflow (SQLite) logging and
              registration — the target is under 30 s

Rerun: .venv/bin/python benchmarks/bench_training.py [--trials 30]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def step(name: str, trials: int) -> dict[str, float]:
    from datetime import date

    from pipeline.training import (
        TrainingConfig,
        build_training_set,
        plan_cutoffs,
        stack_features,
        train_model,
    )
    from rollguard.settings import Settings
    from rollguard.weeks import iso_week_label
    from usecases.cdnow.source import load_dataset

    tx, _, _ = load_dataset()
    weeks = sorted({iso_week_label(d.date()) for d in tx["date"]})
    settings = Settings(home=Path(tempfile.mkdtemp()), env="test", _env_file=None)  # type: ignore[call-arg]
    plan = plan_cutoffs(weeks, n_fit=settings.training_cutoffs, n_validation=1)
    config = TrainingConfig.from_settings(settings)
    start = time.perf_counter()
    if name == "baseline":
        stack_features(tx, [date(1998, 6, 8)])
    elif name == "features_8":
        stack_features(tx, plan.fit)
    else:
        data = build_training_set(tx, plan)
        start = time.perf_counter()
        if name == "train":
            train_model(data, config)
        elif name == "shap":
            from pipeline.tracking import explain, sample_rows

            model = train_model(data, config)
            start = time.perf_counter()
            explain(model.booster, sample_rows(data.evaluation, 2000, 0))
        elif name == "tune_30":
            from pipeline.tuning import tune

            tune(
                data,
                config,
                storage_url=settings.optuna_url,
                study_name="bench",
                n_trials=trials,
                timeout_seconds=None,
                seed=0,
            )
        elif name == "run_reuse":
            from pipeline.retrain import TrainingInputs, retrain
            from pipeline.training import DEFAULT_TUNABLE
            from pipeline.tuning import StoredParams

            start = time.perf_counter()
            import pipeline.tuning as tuning

            tuning.load_stored_params = lambda *_a, **_k: StoredParams(  # as if a champion existed
                dict(DEFAULT_TUNABLE), plan.evaluation, "1", "bench", "champion"
            )
            settings.ensure_dirs()
            retrain(settings, inputs=TrainingInputs(tx, weeks), mode="reuse")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.trials)))
        return
    rows = []
    for name in ("baseline", "features_8", "train", "shap", "run_reuse", "tune_30"):
        out = subprocess.run(
            [sys.executable, __file__, "--step", name, "--trials", str(args.trials)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    base = rows[0][1]["seconds"]
    print(f"{'step':<12}{'seconds':>10}{'x baseline':>12}{'peak RSS MB':>13}")
    for name, r in rows:
        print(
            f"{name:<12}{r['seconds']:>10.2f}{r['seconds'] / base:>12.1f}{r['peak_rss_mb']:>13.0f}"
        )
    print("\nbaseline = build_features at one cutoff (1998-06-08); target: run_reuse < 30 s")
    print("rerun: .venv/bin/python benchmarks/bench_training.py --trials", args.trials)


if __name__ == "__main__":
    main()
