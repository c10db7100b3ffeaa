"""How long one feature build takes on the real CDNOW data.

Rows (median of --repeat runs, seconds, and ratio to the baseline measured in the same run):
  baseline   one pandas groupby-sum of dollar_value per customer over the purchases before the
             cutoff: the least work any per-customer feature needs
  features   usecases.cdnow.features.build_features at one cutoff (in memory)
  snapshot   domain.snapshots.build_snapshot at one cutoff: read the warehouse (ledger + Parquet),
             build, write the Parquet snapshot — what `rollguard features build` does

Rerun: uv run python benchmarks/bench_features.py [--cutoff 1998-01-05] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path


def median_seconds(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoff", type=date.fromisoformat, default=date(1998, 1, 5))
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from domain.snapshots import build_snapshot
    from pipeline import feed
    from pipeline.ingest import ingest_landing
    from rollguard.settings import Settings
    from usecases.cdnow.features import build_features
    from usecases.cdnow.source import load_dataset

    data, _, _ = load_dataset()
    before = data[data["date"] < str(args.cutoff)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        feed.replay(settings, until=args.cutoff)
        ingest_landing(settings)
        rows = [
            (
                "baseline",
                median_seconds(
                    lambda: before.groupby("customer_id")["dollar_value"].sum(), args.repeat
                ),
            ),
            (
                "features",
                median_seconds(
                    lambda: build_features(data, args.cutoff, label_available=True), args.repeat
                ),
            ),
            (
                "snapshot",
                median_seconds(lambda: build_snapshot(settings, args.cutoff), args.repeat),
            ),
        ]
    base = rows[0][1]
    print(
        f"feature build at cutoff {args.cutoff} on CDNOW ({len(data)} purchases), "
        f"median of {args.repeat}"
    )
    print(f"{'step':<10} {'seconds':>9} {'x baseline':>11}")
    for name, seconds in rows:
        print(f"{name:<10} {seconds:>9.4f} {seconds / base:>11.1f}")
    print(f"\nrerun: uv run python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
