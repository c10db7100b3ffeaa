"""Fault tolerance of the weekly DAG on real data: a transient fault is retried and the run
succeeds; a fault that stays fails the run with the failing task named; a run killed in the middle
and started again duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.dags.conftest import REPO, clean_environment, run_python

SMALL = {
    "ROLLGUARD_TUNING_TRIALS": "2",
    "ROLLGUARD_NUM_BOOST_ROUND": "40",
    "ROLLGUARD_SHAP_SAMPLE_ROWS": "200",
    "ROLLGUARD_TRAINING_CUTOFFS": "4",
}

# Turns <home>/warehouse/records into a plain file (ingestion cannot write its Parquet there)
# and, with HEAL=1, removes that file from another thread once the first try has failed.
WAREHOUSE_FAULT = """
import json, os, shutil, sys, threading, time
from pathlib import Path
from rollguard.settings import Settings
from rollguard.logs import log_formatter
from pipeline import demo
settings = Settings()
# The pipeline's own lines as the stack renders them (JSON, docs/logs.md), into a file: the
# embedded Airflow logs warnings only, and replaces the root logger's handlers when it starts.
import logging
log_file = settings.home / "pipeline-log.jsonl"
log_file.parent.mkdir(parents=True, exist_ok=True)
handler = logging.FileHandler(log_file)
handler.setFormatter(log_formatter("json"))
logging.getLogger("pipeline").setLevel(logging.INFO)
logging.getLogger("pipeline").addHandler(handler)
target = settings.warehouse_dir / "records"
target.parent.mkdir(parents=True, exist_ok=True)
if target.is_dir():
    shutil.rmtree(target)
target.write_text("not a folder")
heal = os.environ.get("HEAL") == "1"
def healer():
    # Put the folder back once Airflow has seen ingest fail and scheduled a retry.
    import sqlite3
    db = settings.home / "airflow" / "airflow.db"
    while True:
        time.sleep(0.1)
        try:
            con = sqlite3.connect(str(db), timeout=1)
            states = [r[0] for r in con.execute(
                "select state from task_instance where task_id = 'ingest'")]
            con.close()
        except sqlite3.Error:
            continue
        if "up_for_retry" in states:
            target.unlink()
            return
if heal:
    threading.Thread(target=healer, daemon=True).start()
started = time.monotonic()
try:
    result = demo.run_demo(settings, demo.DemoOptions(weeks=0, faults=False), progress=lambda s: None)
    outcome = {"ok": True, "rows": result.rows}
except Exception as exc:
    outcome = {"ok": False, "error": str(exc), "kind": type(exc).__name__}
import sqlite3
con = sqlite3.connect(str(settings.home / "airflow" / "airflow.db"))
tries = dict(con.execute("select task_id, max(try_number) from task_instance group by task_id"))
store = sqlite3.connect(str(settings.home / "monitoring.db"))
runs = [list(r) for r in store.execute("select dag_id, state, week, detail from pipeline_runs")]
handler.flush()
lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
print(json.dumps({**outcome, "tries": tries, "runs": runs, "seconds": time.monotonic() - started,
                  "log": lines}))
"""


def test_a_transient_fault_is_retried_and_the_run_succeeds(tmp_path: Path) -> None:
    out = run_python(WAREHOUSE_FAULT, tmp_path / "home", env={**SMALL, "HEAL": "1"})
    assert out["ok"], out
    assert out["tries"]["ingest"] >= 2, out["tries"]
    assert out["rows"][0]["decision"] == "bootstrap"
    # The run's pipeline_runs row: success, written by the report step (the retried fault is gone).
    assert [(dag, state) for dag, state, _, _ in out["runs"]] == [("rollguard_retrain", "success")]
    # The pipeline's log lines carry the run, the task, the use case and the version at hand
    # (docs/logs.md, "Airflow tasks"), bound by the tasks through Airflow's own task context.
    by_task = {line["task"]: line for line in out["log"] if "task" in line}
    assert {"train", "gate"} <= by_task.keys(), out["log"]
    run_ids = {line["dag_run_id"] for line in by_task.values()}
    assert len(run_ids) == 1 and run_ids.pop().startswith("manual__"), by_task
    version = out["rows"][0]["champion"]
    for task in ("train", "gate"):
        line = by_task[task]
        assert (line["dag_id"], line["usecase"]) == ("rollguard_retrain", "cdnow"), line
        assert line["model_version"] == version, line


def test_a_fault_that_stays_fails_the_run_naming_the_task(tmp_path: Path) -> None:
    out = run_python(WAREHOUSE_FAULT, tmp_path / "home", env=SMALL)
    assert not out["ok"]
    assert out["kind"] == "RollguardError"
    assert "failed tasks: ['ingest'" in out["error"] or "'ingest'" in out["error"], out["error"]
    assert out["tries"]["ingest"] == 4  # the first try and three retries, then the run gives up
    # The failure callback recorded the run as failed, naming the task.
    failed = [(state, json.loads(detail)) for _, state, _, detail in out["runs"]]
    assert [state for state, _ in failed] == ["failed"], out["runs"]
    assert failed[0][1]["failed_task"] == "ingest"
    print(f"persistent fault: the run failed after {out['seconds']:.1f} s")


#: The last error reading the registry's SQLite file while the demo writes to it (for the message).
_LAST_READ_ERROR: list[str] = []


def _registry_versions(home: Path) -> list[tuple[str, str]]:
    """Registered versions and their training keys, read from the embedded MLflow SQLite file while
    another process writes to it: waits up to 60 s for a write lock instead of SQLite's 5 s, and
    remembers any other error instead of hiding it."""
    db = home / "mlflow.db"
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    except sqlite3.OperationalError as exc:
        _LAST_READ_ERROR[:] = [str(exc)]
        return []
    try:
        return list(
            con.execute(
                "select v.version, t.value from model_versions v left join model_version_tags t "
                "on t.name = v.name and t.version = v.version and t.key = 'rollguard.training_key'"
            )
        )
    except sqlite3.OperationalError as exc:  # no such table yet, or still locked after 60 s
        _LAST_READ_ERROR[:] = [str(exc)]
        return []
    finally:
        con.close()


DEMO = """
import json
from rollguard.settings import Settings
from pipeline import demo
r = demo.run_demo(Settings(), demo.DemoOptions(weeks=2, faults=False, force_retrain_at=1),
                  progress=lambda s: print(s, flush=True))
print(json.dumps({"rows": r.rows}))
"""


def test_a_killed_run_started_again_duplicates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_environment({**SMALL, "ROLLGUARD_HOME": str(home), "PYTHONPATH": str(REPO)})
    proc = subprocess.Popen(
        [sys.executable, "-c", DEMO],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Kill it as soon as the first model version is registered: mid-run, after training.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and not _registry_versions(home):
        time.sleep(0.2)
    assert proc.poll() is None, (
        f"the run ended (exit {proc.returncode}) before a registered version was seen; "
        f"last registry read error: {_LAST_READ_ERROR}"
    )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    out = run_python(DEMO, home, env=SMALL)
    versions = _registry_versions(home)
    keys = [key for _, key in versions]
    assert len(keys) == len(set(keys)), f"a training ran twice into two versions: {versions}"
    con = sqlite3.connect(str(home / "monitoring.db"))
    ledger = list(
        con.execute(
            "select file_name, content_sha256, count(*) from ingestion_ledger "
            "group by file_name, content_sha256 having count(*) > 1"
        )
    )
    assert ledger == []
    weeks = con.execute("select count(distinct week) from ingestion_ledger where status='accepted'")
    assert weeks.fetchone()[0] == len(list((home / "landing").glob("cdnow_*.csv")))
    predictions = list((home / "warehouse" / "predictions").rglob("*.parquet"))
    assert len(predictions) == len({p.parent.name + p.name for p in predictions})
    assert out["rows"][-1]["champion"] is not None
