"""DAG ``rollguard_landing_watch``: start a retrain run when new files land (see docs/pipeline.md).

Every 5 minutes: look for landing files that have no ingestion decision yet (the same test as the
retrain DAG's first task, so a file is announced until it is decided); when there are some, emit an
event on the ``rollguard_landing`` asset, which schedules ``rollguard_retrain``. When nothing waits
the run stops at the first task and emits nothing. Polling is cheap (one ledger query and a hash of
each new file) and needs no extra service; the retrain DAG allows one active run, so files that
arrive during a run are picked up by the next announcement.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task

from pipeline.assets import LANDING

#: Most file names carried in the event's XCom (the count is always exact).
MAX_NAMES = 50


@dag(
    dag_id="rollguard_landing_watch",
    schedule="*/5 * * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": 2.0,
    },
    tags=["rollguard"],
    doc_md=__doc__,
)
def rollguard_landing_watch() -> None:
    @task.short_circuit
    def files_waiting() -> bool:
        from pipeline.steps import detect_new_files, task_settings

        return bool(detect_new_files(task_settings(get_current_context())))

    @task(outlets=[LANDING])
    def announce() -> dict:
        from pipeline.steps import detect_new_files, task_settings

        names = detect_new_files(task_settings(get_current_context()))
        return {"n_files": len(names), "files": names[:MAX_NAMES]}

    files_waiting() >> announce()


rollguard_landing_watch()
