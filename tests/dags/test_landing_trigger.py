"""New files in the landing zone schedule the retrain DAG: ``rollguard_landing_watch`` emits an
event on the ``rollguard_landing`` asset only when undecided files wait, and ``rollguard_retrain``
runs on that event or on its weekly time."""

from __future__ import annotations

from pathlib import Path

from tests.dags.conftest import run_python

WATCH = """
import json, sys
from rollguard.settings import Settings
from pipeline.airflow_env import configure_airflow, DAGS_FOLDER
settings = Settings()
configure_airflow(settings)
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
bag = DagBag(dag_folder=str(DAGS_FOLDER))
watch = bag.get_dag("rollguard_landing_watch")
retrain = bag.get_dag("rollguard_retrain")
out = {
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "watch_tasks": {t.task_id: sorted(t.downstream_task_ids) for t in watch.tasks},
    "announce_outlets": [o.name for o in watch.get_task("announce").outlets],
    "retrain_timetable": type(retrain.timetable).__name__,
    "retrain_assets": [a.name for a in retrain.timetable.asset_condition.objects],
    "retrain_cron": repr(retrain.timetable.timetable),
}
from pipeline import feed
def states(run):
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
from datetime import datetime, timedelta, timezone
t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
out["empty"] = states(watch.test(logical_date=t0))
feed.replay(settings, weeks=2)
out["waiting"] = states(watch.test(logical_date=t0 + timedelta(minutes=5)))
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as session:
    out["events"] = [
        (e.extra, name) for e, name in session.execute(
            select(AssetEvent, AssetModel.name).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        ).all()
    ]
print(json.dumps(out, default=str))
"""


def test_landing_files_emit_one_asset_event_that_schedules_the_retrain_dag(
    tmp_path: Path,
) -> None:
    out = run_python(WATCH, tmp_path / "home")
    assert out["errors"] == {}
    assert out["watch_tasks"] == {"files_waiting": ["announce"], "announce": []}
    assert out["announce_outlets"] == ["rollguard_landing"]
    assert out["retrain_timetable"] == "AssetOrTimeSchedule"
    assert out["retrain_assets"] == ["rollguard_landing"]
    assert "0 6 * * 1" in out["retrain_cron"]
    # Nothing waiting: the run stops at the first task and emits nothing.
    assert out["empty"]["announce"] == "skipped"
    # Two weekly files waiting: one event on the asset.
    assert out["waiting"]["announce"] == "success"
    assert [name for _, name in out["events"]] == ["rollguard_landing"]
