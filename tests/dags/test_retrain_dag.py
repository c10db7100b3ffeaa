"""The retrain DAG: it imports cleanly, has the documented structure and retries, and a real
``dag.test()`` replay of CDNOW goes through bootstrap, quarantine, gate, forced bad model and
automatic rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dags.conftest import run_python

STRUCTURE = """
import json, os
from rollguard.settings import Settings
from pipeline.airflow_env import configure_airflow, DAGS_FOLDER
configure_airflow(Settings())
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=str(DAGS_FOLDER))
dag = bag.get_dag("rollguard_retrain")
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
    "retries": {t.task_id: [t.retries, bool(t.retry_exponential_backoff)] for t in dag.tasks},
    "schedule": str(dag.schedule),
}))
"""


def test_dag_imports_with_the_documented_structure(tmp_path: Path) -> None:
    out = run_python(STRUCTURE, tmp_path / "home")
    assert out["errors"] == {}
    assert "rollguard_retrain" in out["dag_ids"]
    tasks = out["tasks"]
    assert tasks["detect_new_batches"] == ["ingest"]
    assert tasks["ingest"] == ["backfill", "report"]
    assert tasks["backfill"] == ["build_features", "report"]
    assert set(tasks["build_features"]) == {"score_batch", "monitor", "report"}
    assert set(tasks["score_batch"]) == {"guard_check", "monitor", "report"}
    for parallel in ("guard_check", "monitor"):
        assert set(tasks[parallel]) == {"decide_retrain", "report"}
    assert set(tasks["decide_retrain"]) == {"train", "report"}
    assert set(tasks["train"]) == {"gate", "report"}
    assert tasks["gate"] == ["report"]
    assert all(retries >= 2 and backoff for retries, backoff in out["retries"].values())
    assert "0 6 * * 1" in out["schedule"]


DEMO = """
import json, os, sys
from rollguard.settings import Settings
from pipeline import demo
settings = Settings()
result = demo.run_demo(settings, demo.DemoOptions(weeks=6, malformed_at=2, force_retrain_at=3,
                                                   broken_at=4), progress=lambda line: print(line, file=sys.stderr))
# XCom stays small: every task's return value, serialised, is bounded.
import sqlite3
con = sqlite3.connect(str(settings.home / "airflow" / "airflow.db"))
sizes = [len(v if isinstance(v, bytes) else str(v).encode()) for (v,) in con.execute("select value from xcom")]
print(json.dumps({**demo.to_json(result), "xcom_max_bytes": max(sizes), "xcom_count": len(sizes)}))
"""


@pytest.mark.slow
def test_demo_replay_through_the_real_dag(tmp_path: Path) -> None:
    env = {
        "ROLLGUARD_TUNING_TRIALS": "3",
        "ROLLGUARD_NUM_BOOST_ROUND": "60",
        "ROLLGUARD_SHAP_SAMPLE_ROWS": "300",
    }
    out = run_python(DEMO, tmp_path / "home", env=env)
    rows, events, summary = out["rows"], out["events"], out["summary"]
    assert rows[0]["decision"] == "bootstrap", rows[0]
    assert summary["files_quarantined"] == 1
    quarantined = [r for r in rows if r["files_quarantined"]]
    assert list(quarantined[0]["quarantined"].values()) == ["bad_type"]
    assert any(r["decision"] in ("promote", "reject") for r in rows[1:]), rows
    gated = [e for e in events if e.get("event") == "broken model gated"]
    assert gated and gated[0]["outcome"] == "reject"
    assert [e for e in events if e.get("event") == "human forced promotion"]
    rolled = [r for r in rows if r.get("rolled_back_to")]
    assert rolled, json.dumps(rows, indent=1)
    assert rows[-1]["champion"] != gated[0]["version"]
    assert 0 < out["xcom_max_bytes"] < 16_384
