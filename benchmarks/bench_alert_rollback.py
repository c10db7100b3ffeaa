"""Time from an injected degradation to the restored champion, through the real alerting path.

Setup (tests/support/alert_stack.py): a real MLflow tracking server, two real small XGBoost versions
(champion v2, previous v1), the model server, the guard service (store exporter + webhook), real
Prometheus 2.42 and Alertmanager 0.25 with configs generated from the shipped rules and
Alertmanager routes. A fresh stack (new model, new store) per run, so every run is a first incident.
The degradation is injected as the monitor step reports one: ``monitoring_results`` quality rows
(``degraded`` = 1) for the newest week, written to the store.

Columns, per interval set (median of --repeat runs, seconds from the injection; the stages are
polled about every 20-50 ms, so each is observed a few tens of ms late):
  exported      the guard's /metrics shows rollguard_live_quality_degraded 1
  firing        Prometheus' /api/v1/alerts lists RollguardLiveQualityDegraded as firing
  in AM         Alertmanager's /api/v2/alerts has it
  rolled back   moved_at of the guard's rollback audit row (actor alert)
  restored      first ``GET /v1/model`` answer naming v1 (and its max over the runs)
Named baseline, from the same intervals: ``sum of waits`` = scrape + evaluation + for + group_wait +
API poll (each stage can wait up to its full interval: the worst case of the path), and the
``floor`` = for + group_wait (waits that always elapse). Interval sets:
  shipped   scrape 15 s (docs/alerting.md), rule group 10 s, for 10 s, group_wait 5 s, API poll 5 s
  test      1 s / 1 s / 1 s / 1 s, API poll 0.5 s
Target: restored under 60 s with the shipped intervals.

The guard job's scrape interval is what matters on this path (the API's is not on it): pass
``--scrape 30`` to measure with a 30 s guard scrape.

Path ``live`` (issue 19, ``--path live``): a genuinely broken model promoted by a person under
traffic. Setup in tests/support/live_rollback.py: v1 and v2 gated by the real gate, steady traffic of
real CDNOW rows of the current week (10 rows every 50 ms), then ``rollguard promote V --force`` of a
model trained on shuffled labels or with a feature-order bug (the kinds alternate over the runs).
Columns (seconds from the start of the ``promote --force`` command, a separate process whose
start-up is included): ``served`` — traffic first answered by the broken version; ``rolled back``
— the guard's rollback audit row seen; ``restored`` — traffic first answered by v2 again (median and
max); ``served->restored`` — from the broken version's first answer to v2's first answer again
(the CLI's start-up excluded). Named baseline: ``sum of waits`` = API poll (swap in) + scrape + evaluation + for + group_wait +
API poll (swap back). Interval set ``shipped``: the API job's 15 s scrape, the live rule's group
interval and ``for:``, the guard route's group_wait, the API's 5 s poll.

Rerun: uv run python benchmarks/bench_alert_rollback.py [--path store|live] [--repeat 3]
       [--only shipped|test] [--scrape S]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    parser.add_argument("--path", choices=["store", "live"], default="store")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["shipped", "test"], default=None)
    parser.add_argument(
        "--scrape",
        type=float,
        default=None,
        help="scrape interval of the guard job for the shipped set, seconds (default 15)",
    )
    args = parser.parse_args()
    reason = missing_binaries()
    if reason:
        sys.exit(f"cannot run: {reason}")
    if args.path == "live":
        live_main(args)
        return
    shipped = shipped_intervals()
    if args.scrape is not None:
        shipped = dataclasses.replace(shipped, scrape=args.scrape)
    sets = [iv for iv in (shipped, TEST_INTERVALS) if args.only in (None, iv.name)]
    results: dict[str, list[Any]] = {iv.name: [] for iv in sets}
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
                    results[iv.name].append(t)
                    print(f"  {iv.name} run {i + 1}: {t}", file=sys.stderr)
        finally:
            mlflow.stop()

    def med(values: list[float | None]) -> str:
        seen = [v for v in values if v is not None]
        return f"{statistics.median(seen):.2f}" if seen else "-"

    print("seconds from the injected degradation (median of runs; restored: median and max)")
    print(
        f"{'intervals':<9} {'runs':>4} {'exported':>8} {'firing':>7} {'in AM':>6} "
        f"{'rolled back':>11} {'restored':>8} {'max':>6} {'sum of waits':>12} {'floor':>6} "
        f"{'restored/sum':>12}"
    )
    for iv in sets:
        rows = results[iv.name]
        restored = [t.restored for t in rows]
        median = statistics.median(restored)
        print(
            f"{iv.name:<9} {len(rows):>4} {med([t.exported for t in rows]):>8} "
            f"{med([t.firing for t in rows]):>7} {med([t.in_alertmanager for t in rows]):>6} "
            f"{med([t.rolled_back for t in rows]):>11} {median:>8.2f} {max(restored):>6.2f} "
            f"{iv.worst_case_seconds:>12.1f} {iv.floor_seconds:>6.1f} "
            f"{median / iv.worst_case_seconds:>11.2f}x"
        )
    for iv in sets:
        print(
            f"  {iv.name}: scrape {iv.scrape:g} s, evaluation {iv.evaluation:g} s, for "
            f"{iv.trigger_for:g} s, group_wait {iv.group_wait:g} s, API poll {iv.api_poll:g} s"
        )
    if "shipped" in results:
        worst = max(t.restored for t in results["shipped"])
        verdict = "met" if worst < 60 else "NOT met"
        print(
            f"target: restored under 60 s with the shipped intervals (max {worst:.1f} s) -> {verdict}"
        )
    extra = (f" --only {args.only}" if args.only else "") + (
        f" --scrape {args.scrape:g}" if args.scrape is not None else ""
    )
    print(f"rerun: uv run python benchmarks/bench_alert_rollback.py --repeat {args.repeat}{extra}")


def live_main(args: argparse.Namespace) -> None:
    """The ``live`` path: a broken model forced in under traffic, rolled back by the live signal."""
    from tests.support.alert_stack import (
        TEST_INTERVALS,
        shipped_intervals,
        start_stack,
        targets_up,
        wait_until,
    )
    from tests.support.live_rollback import (
        BROKEN_KINDS,
        BROKEN_SEEDS,
        LIVE_TRIGGER,
        Traffic,
        force_and_wait_restored,
        register,
        register_gated,
        train,
    )
    from tests.support.servers import start_mlflow_server

    shipped = shipped_intervals(LIVE_TRIGGER)
    if args.scrape is not None:
        shipped = dataclasses.replace(shipped, scrape=args.scrape)
    sets = [iv for iv in (shipped, TEST_INTERVALS) if args.only in (None, iv.name)]
    results: dict[str, list[Any]] = {iv.name: [] for iv in sets}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        root = Path(tmp)
        mlflow = start_mlflow_server(root / "mlflow", root / "logs")
        try:
            for iv in sets:
                for i in range(args.repeat):
                    kind = BROKEN_KINDS[i % len(BROKEN_KINDS)]
                    stack = start_stack(
                        root / f"{iv.name}-{i}", mlflow.url, iv, register=register_gated,
                        triggers=(LIVE_TRIGGER,),
                    )  # fmt: skip
                    traffic = Traffic(stack.api.url).start()
                    try:
                        wait_until(lambda s=stack: targets_up(s), 90, "targets up")
                        name, uri = stack.settings.model_name, stack.settings.tracking_uri
                        broken = register(train(kind, seed=BROKEN_SEEDS[kind]), name, uri)
                        t = force_and_wait_restored(stack, traffic, broken, stack.v2, kind, 600)
                        failed = traffic.failed()
                    except Exception:
                        print(stack.logs(), file=sys.stderr)
                        raise
                    finally:
                        traffic.stop()
                        stack.stop()
                    results[iv.name].append((t, len(traffic.answers), len(failed)))
                    print(f"  {iv.name} run {i + 1}: {t}, failed {len(failed)}", file=sys.stderr)
        finally:
            mlflow.stop()
    print("seconds from `rollguard promote V --force` (median of runs; restored: median and max)")
    print(
        f"{'intervals':<9} {'runs':>4} {'kinds':<28} {'served':>6} {'rolled back':>11} "
        f"{'restored':>8} {'max':>6} {'served->restored':>16} {'sum of waits':>12} "
        f"{'restored/sum':>12} {'failed req':>10}"
    )
    for iv in sets:
        rows = results[iv.name]
        restored = [t.restored for t, _, _ in rows]
        waits = iv.worst_case_seconds + iv.api_poll
        median = statistics.median(restored)
        kinds = ",".join(sorted({t.kind for t, _, _ in rows}))
        print(
            f"{iv.name:<9} {len(rows):>4} {kinds:<28} "
            f"{statistics.median([t.serving for t, _, _ in rows]):>6.1f} "
            f"{statistics.median([t.rolled_back for t, _, _ in rows]):>11.1f} {median:>8.1f} "
            f"{max(restored):>6.1f} "
            f"{statistics.median([t.restored - t.serving for t, _, _ in rows]):>16.1f} "
            f"{waits:>12.1f} {median / waits:>11.2f}x "
            f"{sum(f for _, _, f in rows):>4} of {sum(n for _, n, _ in rows)}"
        )
    for iv in sets:
        print(
            f"  {iv.name}: scrape {iv.scrape:g} s, evaluation {iv.evaluation:g} s, for "
            f"{iv.trigger_for:g} s, group_wait {iv.group_wait:g} s, API poll {iv.api_poll:g} s"
        )
    if "shipped" in results:
        median = statistics.median(t.restored for t, _, _ in results["shipped"])
        verdict = "met" if median < 60 else "NOT met"
        print(
            f"target: median restored under 60 s, shipped intervals ({median:.1f} s) -> {verdict}"
        )
    extra = (f" --only {args.only}" if args.only else "") + (
        f" --scrape {args.scrape:g}" if args.scrape is not None else ""
    )
    print(
        "rerun: uv run python benchmarks/bench_alert_rollback.py --path live "
        f"--repeat {args.repeat}{extra}"
    )


if __name__ == "__main__":
    main()
