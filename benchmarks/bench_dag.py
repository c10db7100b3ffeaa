"""How long the weekly DAG takes, and how much of it is Airflow's own overhead.

Rows (seconds; the ratio column compares each row with its named baseline in the same run):

  import: parsing the DAG folder with a DagBag in a fresh interpreter (target < 2 s), against
          the baseline of importing ``airflow.sdk`` alone in a fresh interpreter
  runs:   one ``dag.test()`` run each (real CDNOW data, embedded SQLite): the initial run (no
          champion: Optuna tunes, the gate bootstraps), a weekly run that reuses parameters
          (forced retrain), and weekly runs without retraining; baseline = the sum of the run's
          task durations from Airflow's metadata, so ``wall / tasks`` is Airflow's overhead.

Rerun: uv run python benchmarks/bench_dag.py [--trials 12] [--weeks 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fresh_python_seconds(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--weeks", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "ROLLGUARD_HOME": tmp,
            "PYTHONPATH": str(REPO),
            "ROLLGUARD_TUNING_TRIALS": str(args.trials),
        }
        from pipeline.airflow_env import airflow_environment, configure_airflow
        from rollguard.settings import Settings

        settings = Settings(home=Path(tmp))
        configure_airflow(settings)
        env.update(airflow_environment(settings))
        baseline_import = min(fresh_python_seconds("import airflow.sdk", env) for _ in range(3))
        parse = min(
            fresh_python_seconds(
                "from airflow.dag_processing.dagbag import DagBag;"
                "from pipeline.airflow_env import DAGS_FOLDER;"
                "b=DagBag(dag_folder=str(DAGS_FOLDER)); assert not b.import_errors",
                env,
            )
            for _ in range(3)
        )
        code = (
            "import json, sys\n"
            "from rollguard.settings import Settings\n"
            "from pipeline import demo\n"
            f"r = demo.run_demo(Settings(), demo.DemoOptions(weeks={args.weeks}, faults=False,"
            " force_retrain_at=1), progress=lambda s: None)\n"
            "print(json.dumps(r.rows))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        con = sqlite3.connect(str(Path(tmp) / "airflow" / "airflow.db"))
        work = [
            float(total or 0.0)
            for (total,) in con.execute(
                "select sum((julianday(end_date) - julianday(start_date)) * 86400) "
                "from task_instance group by run_id order by min(start_date)"
            )
        ]

    print(f"DAG timings on CDNOW, embedded (tuning budget {args.trials} trials)")
    print(f"{'row':34} {'seconds':>8} {'baseline':>9} {'ratio':>6}")
    print(
        f"{'import: DagBag parse':34} {parse:8.2f} {baseline_import:9.2f} "
        f"{parse / baseline_import:6.2f}"
    )
    for row, tasks in zip(rows, work, strict=False):
        kind = row.get("retrain") or "-"
        tuning = row.get("tuning") or "no training"
        label = f"run {row['run']}: {kind} ({tuning})"
        print(f"{label[:34]:34} {row['seconds']:8.1f} {tasks:9.1f} {row['seconds'] / tasks:6.2f}")
    print(
        f"\nrerun: uv run python benchmarks/bench_dag.py --trials {args.trials} --weeks {args.weeks}"
    )


if __name__ == "__main__":
    main()
