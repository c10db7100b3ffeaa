"""The full stack as local processes (``rollguard stack up``), started once for this module,
LocalExecutor on PostgreSQL: weekly files land, the landing watch announces them, the scheduler
runs ``rollguard_retrain`` through the execution API, the gate bootstraps a champion and every API
replica serves it; a transient fault is retried by the scheduler; Prometheus discovers every API
replica from the file ``stack up`` writes and counts every request; a replica killed with SIGKILL
replays its own spool after a restart. Checked through public interfaces only: Airflow's REST API,
``rollguard models --json``, ``GET /v1/model``, Prometheus's query API, the prediction log."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from rollguard import stack_runner
from tests.support.live_stack import (
    PG,
    LiveStack,
    bootstrap_champion,
    start_live_stack,
    stop_live_stack,
    trained_runs,
    unavailable,
    wait_until,
)
from usecases.cdnow.features import FEATURE_COLUMNS

pytestmark = [pytest.mark.slow]

ROW = {name: 1.0 for name in FEATURE_COLUMNS}


@pytest.fixture(scope="module")
def live() -> Iterator[LiveStack]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    stack = start_live_stack()
    try:
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stop_live_stack(stack)


@pytest.fixture(scope="module")
def champion(live: LiveStack) -> str:
    """The first champion, bootstrapped by a retrain run the landing watch's event started."""
    return bootstrap_champion(live)[1]


def test_landing_files_retrain_under_the_scheduler_and_every_replica_serves_the_champion(
    live: LiveStack, champion: str
) -> None:
    runs = live.dag_runs("rollguard_retrain")
    run = next(r for r in runs if r["run_type"] == "asset_triggered")  # scheduled by the event
    assert run["state"] == "success"
    events = live.api("GET", "assets/events", params={"limit": 100})["asset_events"]
    announced = [e for e in events if e["source_dag_id"] == "rollguard_landing_watch"]
    assert announced, events
    created = {r["run_id"] for e in announced for r in e["created_dagruns"]}
    assert run["dag_run_id"] in created, (run["dag_run_id"], announced)
    trained = trained_runs(live)  # the event's run or the weekly cron run (see trained_runs)
    assert len(trained) == 1 and trained[0][1]["gate"]["state"] == "success", trained
    models = live.rollguard("models", "--json")["versions"]
    gated = next(m for m in models if str(m["version"]) == champion)
    assert gated["gate_decision"] == "bootstrap", gated
    for url in live.api_urls:  # within the alias poll interval (1 s here; a readiness wait)
        wait_until(
            lambda url=url: httpx.get(f"{url}/v1/model", timeout=5).json().get("model_version")
            == champion,
            60, f"{url} serving version {champion}",
        )  # fmt: skip


def test_a_transient_task_fault_is_retried_by_the_scheduler(live: LiveStack, champion: str) -> None:
    """The warehouse folder is a plain file while ``ingest`` first runs (its Parquet cannot be
    written); once the scheduler has put the task up for retry the folder is put back. Two new
    weekly files land and the landing watch announces them, as in production."""
    warehouse = live.home / "warehouse" / "records"
    aside = warehouse.with_name("records.aside")
    warehouse.rename(aside)
    warehouse.write_text("not a folder")
    healed: list[str] = []

    def heal() -> bool:
        for run in live.dag_runs("rollguard_retrain"):
            if run["state"] not in ("queued", "running"):
                continue
            tis = {
                t["task_id"]: t for t in live.task_instances("rollguard_retrain", run["dag_run_id"])
            }
            if tis.get("ingest", {}).get("state") == "up_for_retry":
                warehouse.unlink()
                aside.rename(warehouse)
                healed.append(run["dag_run_id"])
                return True
        return False

    try:
        live.rollguard("data", "replay", "--weeks", "2", "--json")
        live.trigger("rollguard_landing_watch")
        wait_until(heal, 900, "ingest up for retry", period=0.3)
        run = live.wait_for_run("rollguard_retrain", healed[0], timeout=1500)
    finally:
        if not healed and aside.exists():
            warehouse.unlink(missing_ok=True)
            aside.rename(warehouse)
    tis = {t["task_id"]: t for t in live.task_instances("rollguard_retrain", healed[0])}
    assert run["state"] == "success", {k: v["state"] for k, v in tis.items()}
    assert tis["ingest"]["try_number"] >= 2
    assert tis["ingest"]["state"] == "success"


def _prom(live: LiveStack, query: str) -> float:
    data = httpx.get(f"{live.prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_discovers_every_replica_and_counts_every_request(
    live: LiveStack, champion: str
) -> None:
    def targets() -> list[dict]:
        data = httpx.get(f"{live.prometheus}/api/v1/targets", timeout=10).json()["data"]
        return [t for t in data["activeTargets"] if t["labels"]["job"] == "rollguard-api"]

    wait_until(lambda: len(targets()) == 2 and all(t["health"] == "up" for t in targets()), 120,
               "both API replicas discovered and up")  # fmt: skip
    assert {t["labels"]["replica"] for t in targets()} == {"api-1", "api-2"}
    query = 'sum(rollguard_http_requests_total{route="/v1/predict"})'
    before = _prom(live, query)
    n = 60
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            resp = client.post(f"{live.api_urls[i % 2]}/v1/predict", json={"rows": [ROW]})
            assert resp.status_code == 200, resp.text
    wait_until(lambda: _prom(live, query) - before == n, 60, f"Prometheus counting {n} requests")
    per_replica = [_prom(live, f'sum(rollguard_http_requests_total{{route="/v1/predict",replica="api-{k}"}})')
                   for k in (1, 2)]  # fmt: skip
    assert sum(per_replica) - before == n and all(x > 0 for x in per_replica)


def _store_connections(live: LiveStack, allow: bool) -> None:
    """Let connections into the stack's store database, or refuse them and cut the open ones
    (an outage of the store, the database the stack created)."""
    name = f"{live.prefix}_store"
    with psycopg.connect(**PG, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def _logged(live: LiveStack, ids: set[str]) -> int:
    with psycopg.connect(**{**PG, "dbname": f"{live.prefix}_store"}) as conn:  # type: ignore[arg-type]
        rows = conn.execute(
            "SELECT count(DISTINCT request_id) FROM prediction_log WHERE request_id = ANY(%s)",
            (list(ids),),
        ).fetchone()
    return int(rows[0])


def test_a_replica_killed_mid_load_loses_no_logged_prediction(
    live: LiveStack, champion: str
) -> None:
    """With the store down every answered prediction is spooled (fsync-ed) by its replica; api-2
    is killed with SIGKILL while load continues, restarted, and replays its own spool."""
    settings = live.settings
    answered: dict[str, set[str]] = {"api-1": set(), "api-2": set()}
    stop = threading.Event()

    def load(replica: str, url: str) -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    resp = client.post(f"{url}/v1/predict", json={"rows": [ROW]})
                except httpx.HTTPError:
                    continue
                if resp.status_code == 200:
                    answered[replica].add(resp.json()["request_id"])

    def spooled(url: str) -> float:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        line = next(
            x
            for x in text.splitlines()
            if x.startswith("rollguard_prediction_log_spooled_rows_total")
        )
        return float(line.split()[-1])

    _store_connections(live, allow=False)
    api1 = threading.Thread(target=load, args=("api-1", live.api_urls[0]), daemon=True)
    api1.start()
    try:
        with httpx.Client(timeout=5) as client:
            for _ in range(40):
                resp = client.post(f"{live.api_urls[1]}/v1/predict", json={"rows": [ROW]})
                assert resp.status_code == 200, resp.text
                answered["api-2"].add(resp.json()["request_id"])
        wait_until(lambda: spooled(live.api_urls[1]) >= 40, 60, "api-2 spooled its predictions")
        pid = stack_runner.stop_service(settings, "api-2", sig=signal.SIGKILL)
        assert pid is not None
        spool = settings.home / "spool" / "api-2"
        assert sum(1 for f in spool.glob("*.jsonl") for _ in f.open()) >= 40
    finally:
        _store_connections(live, allow=True)
    stack_runner.start_one(settings, "api-2")
    stop.set()
    api1.join(timeout=30)
    ids = answered["api-1"] | answered["api-2"]
    wait_until(lambda: _logged(live, ids) == len(ids), 120, f"{len(ids)} predictions in the log")
    spools = settings.home / "spool"
    wait_until(lambda: not any(spools.rglob("*.jsonl")), 60, "every spool replayed")
    assert {p.name for p in spools.iterdir()} >= {"api-1", "api-2"}  # one spool per replica
