"""Time from an injected degradation to the restored champion, through the real alerting path.

Setup (tests/support/alert_stack.py): a real MLflow tracking server, two real small XGBoost versions
(champion v2, previous v1), the model server, the guard service (store exporter + webhook), real
Prometheus 2.42 and Alertmanager 0.25 with configs generated from the shipped rules and
Alertmanager routes. A fresh stack (new model, new store) per run, so every run is a first incident.
The degradation is injected as the monitor step reports one: ``monitoring_results`` quality rows
(``degraded`` = 1) for the newest week, written to the store.

Rows, per interval set (median and max of --repeat runs, seconds):
  rolled back   injection -> the guard's rollback audit row (actor alert)
  restored      injection -> first ``GET /v1/model`` answer naming v1 (polled every 50 ms)
Named baseline, from the same intervals: ``sum of waits`` = scrape + evaluation + for + group_wait +
API poll (each stage can wait up to its full interval: the worst case of the path), and the
``floor`` = for + group_wait (waits that always elapse). Interval sets:
  shipped   scrape 15 s (docs/alerting.md), rule group 10 s, for 10 s, group_wait 5 s, API poll 5 s
  test      1 s / 1 s / 1 s / 1 s, API poll 0.5 s
Target: restored under 60 s with the shipped intervals.

Rerun: uv run python benchmarks/bench_alert_rollback.py [--repeat 3] [--only shipped|test]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from tests.support.alert_stack import (
        TEST_INTERVALS,
        measure_rollback,
        missing_binaries,
        shipped_intervals,
        start_stack,
        targets_up,
        wait_until,
    )
    from tests.support.servers import start_mlflow_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["shipped", "test"], default=None)
    args = parser.parse_args()
    reason = missing_binaries()
    if reason:
        sys.exit(f"cannot run: {reason}")
    sets = [iv for iv in (shipped_intervals(), TEST_INTERVALS) if args.only in (None, iv.name)]
    results: dict[str, list[tuple[float, float]]] = {iv.name: [] for iv in sets}
    with tempfile.TemporaryDirectory(prefix="bench-alert-") as tmp:
        root = Path(tmp)
        mlflow = start_mlflow_server(root / "mlflow", root / "logs")
        try:
            for iv in sets:
                for i in range(args.repeat):
                    stack = start_stack(root / f"{iv.name}-{i}", mlflow.url, iv)
                    try:
                        wait_until(lambda s=stack: targets_up(s), 90, "targets up")
                        t = measure_rollback(stack, timeout=300)
                    except Exception:
                        print(stack.logs(), file=sys.stderr)
                        raise
                    finally:
                        stack.stop()
                    results[iv.name].append((t.rolled_back, t.restored))
                    print(
                        f"  {iv.name} run {i + 1}: rolled back {t.rolled_back:.2f} s, "
                        f"restored {t.restored:.2f} s",
                        file=sys.stderr,
                    )
        finally:
            mlflow.stop()

    print(
        f"{'intervals':<9} {'runs':>4} {'rolled back med':>16} {'restored med':>13} "
        f"{'restored max':>13} {'sum of waits':>13} {'floor':>6} {'med/sum':>8}"
    )
    for iv in sets:
        rows = results[iv.name]
        rolled = statistics.median(r for r, _ in rows)
        restored = [s for _, s in rows]
        med = statistics.median(restored)
        print(
            f"{iv.name:<9} {len(rows):>4} {rolled:>16.2f} {med:>13.2f} {max(restored):>13.2f} "
            f"{iv.worst_case_seconds:>13.1f} {iv.floor_seconds:>6.1f} "
            f"{med / iv.worst_case_seconds:>7.2f}x"
        )
    for iv in sets:
        print(
            f"  {iv.name}: scrape {iv.scrape:g} s, evaluation {iv.evaluation:g} s, for "
            f"{iv.trigger_for:g} s, group_wait {iv.group_wait:g} s, API poll {iv.api_poll:g} s"
        )
    if "shipped" in results:
        worst = max(s for _, s in results["shipped"])
        verdict = "met" if worst < 60 else "NOT met"
        print(
            f"target: restored under 60 s with the shipped intervals (max {worst:.1f} s) -> {verdict}"
        )
    print("rerun: uv run python benchmarks/bench_alert_rollback.py --repeat 3")


if __name__ == "__main__":
    main()
