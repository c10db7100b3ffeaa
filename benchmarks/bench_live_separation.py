"""How well the model server's live score PSI separates broken models from healthy ones.

Setup (the models and rows of tests/support/live_rollback.py, no servers): the gated champion v2
(30 rounds, seed 2) and its score reference (its scores on the gate's rows: CDNOW at 1997-06-02,
labels matured, deciles as :func:`domain.live_profile.score_reference` keeps them). Live traffic:
the real customer rows of the current week (CDNOW at 1997-06-30). For each candidate model, the
PSI of its live scores against v2's reference: on all current-week rows, and on ``--windows``
random windows of ``--window`` rows (the server's default window is 2,000 rows), as the model
server computes it (reference bins, live counts, ``domain.metrics.psi_from_shares``).

Kinds: ``healthy`` retrains (other seeds); ``shuffled_labels``; ``feature_order`` (trained on the
columns in reversed order under the declared names); ``unit x100 <feature>`` (one USD feature in
cents at training, dollars at serving). Named baseline: ``gated v2 itself`` — the champion's own
live PSI on the same rows, i.e. how far the population moved. Threshold: the guard policy's
``psi_threshold`` (1.0). ``caught`` counts windows above it.

Rerun: uv run python benchmarks/bench_live_separation.py [--seeds 5 6 7 8] [--window 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import pandas as pd
    import xgboost as xgb

    from domain.live_profile import score_reference
    from domain.metrics import psi_from_shares
    from registry_guard.policy import load_guard_policy
    from tests.support.api_models import cdnow_features
    from tests.support.live_rollback import current_week_rows, gate_rows, train
    from usecases.cdnow.features import FEATURE_COLUMNS, LABEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8])
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--windows", type=int, default=20)
    args = parser.parse_args()
    threshold = load_guard_policy().psi_threshold
    cols = list(FEATURE_COLUMNS)
    gate_x = gate_rows()[cols].to_numpy(np.float32)
    live_x = pd.DataFrame(list(current_week_rows()))[cols].to_numpy(np.float32)
    champion = train("healthy", seed=2)
    ref = score_reference(champion.inplace_predict(gate_x), version="2")
    p = np.asarray(ref.shares)
    rng = np.random.default_rng(0)

    def psi(scores: np.ndarray) -> float:
        q = np.bincount(ref.bin_codes(scores), minlength=p.size) / scores.size
        return psi_from_shares(p, q)

    def row(label: str, booster: xgb.Booster) -> None:
        scores = booster.inplace_predict(live_x)
        windows = [psi(rng.choice(scores, args.window, replace=False)) for _ in range(args.windows)]
        caught = sum(w > threshold for w in windows)
        print(
            f"{label:<34} {psi(scores):>8.3f} {np.median(windows):>8.3f} {min(windows):>7.3f} "
            f"{max(windows):>7.3f} {caught:>3}/{len(windows):<3} {psi(scores) / base:>8.1f}x"
        )

    base = max(psi(champion.inplace_predict(live_x)), 1e-9)
    print(
        f"live score PSI against the gated champion's reference ({len(gate_x):,} gate rows, "
        f"{len(live_x):,} current-week rows; windows of {args.window:,}); threshold {threshold}"
    )
    print(
        f"{'model':<34} {'all rows':>8} {'median':>8} {'min':>7} {'max':>7} {'caught':>7} "
        f"{'vs base':>9}"
    )
    row("gated v2 itself (baseline)", champion)
    for seed in args.seeds:
        row(f"healthy seed {seed}", train("healthy", seed=seed))
    for seed in args.seeds:
        row(f"shuffled_labels seed {seed}", train("shuffled_labels", seed=seed))
    for seed in args.seeds:
        row(f"feature_order seed {seed}", train("feature_order", seed=seed))
    frame = cdnow_features()
    x = frame[cols].to_numpy(np.float32)
    y = frame[LABEL].astype("int8").to_numpy()
    for name in ("monetary_total", "monetary_mean", "monetary_max"):
        scaled = x.copy()
        scaled[:, cols.index(name)] *= 100
        params = {
            "objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "subsample": 0.8,
            "seed": args.seeds[0], "nthread": 1,
        }  # fmt: skip
        dm = xgb.DMatrix(scaled, label=y, feature_names=cols)
        row(f"unit x100 {name} seed {args.seeds[0]}", xgb.train(params, dm, 30))
    seeds = " ".join(map(str, args.seeds))
    print(
        f"rerun: uv run python benchmarks/bench_live_separation.py --seeds {seeds} "
        f"--window {args.window} --windows {args.windows}"
    )


if __name__ == "__main__":
    main()
