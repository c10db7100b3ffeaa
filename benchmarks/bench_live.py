"""Landing to serving under the real scheduler, and memory per stack service.

Setup (tests/support/live_stack.py): ``rollguard stack up`` with LocalExecutor on PostgreSQL (its
own databases on 127.0.0.1:5432, dropped afterwards), two API replicas, small training budgets
(2 Optuna trials, 40 rounds, 4 fit cutoffs) and a 1 s API alias poll.

Measured, in one run:
  stack up            seconds of ``rollguard stack up`` (jobs, every service ready)
  landing->serving    seconds from the first of the weekly files landing (``data replay``) to the
                      first ``GET /v1/model`` answer naming the new champion; the landing watch is
                      triggered through the REST API right after the files land (its own schedule
                      polls every 5 minutes, which would add up to 5 min)
  retrain run         start to end of that ``rollguard_retrain`` run, as Airflow reports it
Named baseline, same data, same budgets, same machine, measured first: ``dag.test()``, i.e. the
embedded main job's in-process run of the same DAG on SQLite (``rollguard demo`` with no weekly
runs after its initial load). Ratios: landing->serving / dag.test and retrain run / dag.test.
Memory: resident set of each service's process group (the service and its children, e.g. the
LocalExecutor's workers inside the scheduler's group), read from /proc after the run.

Rerun: uv run python benchmarks/bench_live.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAG_TEST = """
import json, time
from rollguard.settings import Settings
from pipeline import demo
started = time.monotonic()
result = demo.run_demo(
    Settings(), demo.DemoOptions(initial_weeks={weeks}, weeks=0, faults=False),
    progress=lambda s: None,
)
print(json.dumps({{"seconds": time.monotonic() - started, "champion": result.rows[-1]["champion"]}}))
"""


def dag_test_seconds(weeks: int, small: dict[str, str]) -> float:
    """Seconds of the embedded ``dag.test()`` run on the first ``weeks`` weekly files."""
    home = Path(tempfile.mkdtemp(prefix="rollguard-bench-dagtest-"))
    env = {**os.environ, **small, "ROLLGUARD_HOME": str(home), "ROLLGUARD_ENV": "test"}
    proc = subprocess.run(
        [sys.executable, "-c", DAG_TEST.format(weeks=weeks)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"dag.test baseline failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(home, ignore_errors=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["champion"] is None:
        raise SystemExit("dag.test baseline made no champion")
    return float(out["seconds"])


def _seconds(run: dict) -> float:
    start = datetime.fromisoformat(run["start_date"])
    return (datetime.fromisoformat(run["end_date"]) - start).total_seconds()


def main() -> None:
    from rollguard import stack_runner
    from tests.support.live_stack import (
        FIRST_WEEKS,
        SMALL,
        start_live_stack,
        stop_live_stack,
        trained_runs,
        unavailable,
        wait_until,
    )

    reason = unavailable()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    print(f"baseline: dag.test() on {FIRST_WEEKS} weekly files ...", file=sys.stderr)
    baseline = dag_test_seconds(FIRST_WEEKS, SMALL)
    print("rollguard stack up ...", file=sys.stderr)
    t0 = time.monotonic()
    stack = start_live_stack()
    up_seconds = time.monotonic() - t0
    try:
        stack.wait_for_dags("rollguard_landing_watch", "rollguard_retrain")
        landed = time.monotonic()
        stack.rollguard("data", "replay", "--weeks", str(FIRST_WEEKS), "--json")
        stack.trigger("rollguard_landing_watch")
        url = stack.api_urls[0]

        def serving() -> bool:
            answer = httpx.get(f"{url}/v1/model", timeout=5)
            return answer.status_code == 200 and answer.json().get("model_version") is not None

        wait_until(serving, 1800, "the API serving a champion", period=0.2)
        landing_to_serving = time.monotonic() - landed

        # The API swaps as soon as the gate moves the alias; the run ends a task later.
        def trained() -> list[dict]:
            ids = {run_id for run_id, _ in trained_runs(stack)}
            runs = stack.dag_runs("rollguard_retrain")
            return [r for r in runs if r["dag_run_id"] in ids and r["state"] == "success"]

        wait_until(lambda: bool(trained()), 600, "the training run's end", period=1.0)
        retrain = _seconds(trained()[0])
        rss = {
            row.name: stack_runner.group_rss_bytes(row.pid)
            for row in stack_runner.status(stack.settings)
            if row.pid is not None
        }
    finally:
        stop_live_stack(stack)

    print(f"\n{'measure':<22} {'seconds':>9} {'x dag.test':>11}")
    print(f"{'dag.test (baseline)':<22} {baseline:>9.1f} {1.0:>11.2f}")
    print(f"{'retrain run (Airflow)':<22} {retrain:>9.1f} {retrain / baseline:>11.2f}")
    print(
        f"{'landing->serving':<22} {landing_to_serving:>9.1f} {landing_to_serving / baseline:>11.2f}"
    )
    print(f"{'stack up':<22} {up_seconds:>9.1f} {'':>11}")
    print(f"\n{'service':<24} {'RSS MiB':>8}")
    for name, value in rss.items():
        print(f"{name:<24} {value / 2**20:>8.0f}")
    print(f"{'total':<24} {sum(rss.values()) / 2**20:>8.0f}")
    print("\nrerun: uv run python benchmarks/bench_live.py")


if __name__ == "__main__":
    main()
