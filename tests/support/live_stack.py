"""A running ``rollguard stack`` for integration tests and ``benchmarks/bench_live.py``: free
loopback ports, databases of its own on the machine's PostgreSQL (dropped afterwards), Redis keys
under a prefix of its own (deleted afterwards), and a client for Airflow's REST API (``/api/v2``
with a JWT from the simple auth manager's ``POST /auth/token``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import psycopg

from rollguard.settings import Settings
from rollguard.stack_runner import StackPaths
from tests.support.alert_stack import missing_binaries
from tests.support.servers import free_port, venv_bin

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
REDIS = ("127.0.0.1", 6379)
#: Small training budgets: the scheduler path is under test, not the model.
SMALL = {
    "ROLLGUARD_TUNING_TRIALS": "2",
    "ROLLGUARD_NUM_BOOST_ROUND": "40",
    "ROLLGUARD_SHAP_SAMPLE_ROWS": "200",
    "ROLLGUARD_TRAINING_CUTOFFS": "4",
}
#: Weekly files of the first delivery, as the main job's initial load (14 weeks are too few for
#: 4 fit cutoffs, a validation cutoff and a matured evaluation cutoff).
FIRST_WEEKS = 20


def unavailable(*, redis: bool = False) -> str | None:
    """Why a live stack cannot run here (PostgreSQL, Prometheus/Alertmanager, Redis), or None."""
    try:
        with psycopg.connect(**PG, connect_timeout=3):  # type: ignore[arg-type]
            pass
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}"
    missing = missing_binaries()
    if missing:
        return missing
    if redis:
        import redis as redis_lib

        try:
            redis_lib.Redis(*REDIS, socket_timeout=3).ping()
        except redis_lib.RedisError as exc:
            return f"Redis not reachable at 127.0.0.1:6379: {exc}"
    return None


@dataclass
class LiveStack:
    """A stack started with ``rollguard stack up`` under ``home`` with environment ``env``."""

    home: Path
    env: dict[str, str]
    prefix: str
    token: str | None = None
    _client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def settings(self) -> Settings:
        """The stack's settings, as its processes read them from ``env``."""
        with mock.patch.dict(os.environ, self.env):
            return Settings()

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.home)

    def url(self, service: str) -> str:
        status = self.rollguard("stack", "status", "--json")["services"]
        return next(s["url"] for s in status if s["name"] == service)

    @property
    def airflow(self) -> str:
        return f"http://127.0.0.1:{self.env['ROLLGUARD_STACK_AIRFLOW_PORT']}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.env['ROLLGUARD_STACK_PROMETHEUS_PORT']}"

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in json.loads(self.env["ROLLGUARD_STACK_API_PORTS"])]

    def rollguard(self, *args: str, timeout: float = 900) -> Any:
        """Run ``rollguard ARGS`` with the stack's environment; its JSON output.

        Raises:
            AssertionError: it exits non-zero (with its output).
        """
        proc = subprocess.run(
            [venv_bin("rollguard"), *args], env={**os.environ, **self.env},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"rollguard {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return json.loads(proc.stdout) if "--json" in args else proc.stdout

    # --- Airflow's REST API ----------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        if self.token is None:
            password = json.loads(self.paths.secrets.read_text())["airflow_admin_password"]
            resp = self._client.post(
                f"{self.airflow}/auth/token", json={"username": "admin", "password": password}
            )
            resp.raise_for_status()
            self.token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self.token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """``METHOD /api/v2/<path>`` on the api-server; the JSON answer.

        Raises:
            httpx.HTTPStatusError: a non-2xx answer.
        """
        resp = self._client.request(
            method, f"{self.airflow}/api/v2/{path}", headers=self._headers(), **kwargs
        )
        resp.raise_for_status()
        return resp.json()

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run now (like the UI's button); its run id."""
        body = {"logical_date": None, "conf": conf or {}}
        return self.api("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def wait_for_dags(self, *dag_ids: str, timeout: float = 300) -> None:
        """Wait until the dag-processor has parsed ``dag_ids`` and they are not paused."""

        def parsed() -> bool:
            try:
                return all(not self.api("GET", f"dags/{d}")["is_paused"] for d in dag_ids)
            except httpx.HTTPStatusError:
                return False

        wait_until(parsed, timeout, f"DAGs {dag_ids} parsed")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        """Wait until the run ends; the run (``state`` success or failed)."""
        result: dict[str, Any] = {}

        def ended() -> bool:
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            result.update(run)
            return run["state"] in ("success", "failed")

        wait_until(ended, timeout, f"{dag_id} run {run_id} ended", period=2.0)
        return result

    def logs(self) -> str:
        """Tails of every service log (printed when a test fails)."""
        out = []
        for path in sorted(self.paths.logs.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-25:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)


def bootstrap_champion(stack: LiveStack) -> tuple[str, str]:
    """Deliver :data:`FIRST_WEEKS` weekly files, run the landing watch (its asset event schedules
    ``rollguard_retrain``), wait for that run to succeed; its run id and the champion version
    the gate bootstrapped.

    Raises:
        AssertionError: a run failed (service logs printed) or no single champion resulted.
    """
    stack.wait_for_dags("rollguard_landing_watch", "rollguard_retrain")
    stack.rollguard("data", "replay", "--weeks", str(FIRST_WEEKS), "--json")
    # The watch also runs on its own schedule (every 5 minutes): whichever run sees the files
    # first announces them, so the test follows the asset event, not one particular watch run.
    watch = stack.trigger("rollguard_landing_watch")
    assert stack.wait_for_run("rollguard_landing_watch", watch, timeout=600)["state"] == "success"

    def asset_runs() -> list[dict[str, Any]]:
        runs = stack.dag_runs("rollguard_retrain")
        return [r for r in runs if r["run_type"] == "asset_triggered"]

    wait_until(lambda: bool(asset_runs()), 300, "an asset-triggered rollguard_retrain run")
    run_id = asset_runs()[0]["dag_run_id"]
    run = stack.wait_for_run("rollguard_retrain", run_id, timeout=1500)
    if run["state"] != "success":
        print(stack.logs())
    assert run["state"] == "success", run
    models = stack.rollguard("models", "--json")["versions"]
    champions = [m for m in models if "champion" in m["aliases"]]
    assert len(champions) == 1, models
    return run_id, str(champions[0]["version"])


def trained_runs(stack: LiveStack) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """``rollguard_retrain`` runs whose ``train`` task succeeded: (run id, task instances by id).
    Besides the event's run, the scheduler starts the weekly cron run at once (catchup off: the
    latest Monday only); runs are serial (``max_active_runs=1``), so whichever finds the files
    first ingests, trains and gates, and the other short-circuits."""
    out = []
    for run in stack.dag_runs("rollguard_retrain"):
        tis = {
            t["task_id"]: t for t in stack.task_instances("rollguard_retrain", run["dag_run_id"])
        }
        if tis.get("train", {}).get("state") == "success":
            out.append((run["dag_run_id"], tis))
    return out


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, period: float = 0.5
) -> None:
    """Poll ``predicate`` until true (a readiness timeout, not a performance limit).

    Raises:
        AssertionError: still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def stack_env(home: Path, prefix: str, *, executor: str = "LocalExecutor") -> dict[str, str]:
    """Environment of a test stack: free loopback ports, two API replicas, PostgreSQL databases
    ``<prefix>_*``, 1 s scrapes and alias polls, small training budgets."""
    return {
        **SMALL,
        "ROLLGUARD_HOME": str(home),
        "ROLLGUARD_ENV": "test",
        "ROLLGUARD_STACK_POSTGRES_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
        "ROLLGUARD_STACK_DB_PREFIX": prefix,
        "ROLLGUARD_STACK_EXECUTOR": executor,
        "ROLLGUARD_STACK_REDIS_URL": "redis://127.0.0.1:6379/0",
        "ROLLGUARD_STACK_REDIS_PREFIX": f"{prefix}:",
        "ROLLGUARD_STACK_API_PORTS": json.dumps([free_port(), free_port()]),
        "ROLLGUARD_STACK_MLFLOW_PORT": str(free_port()),
        "ROLLGUARD_STACK_AIRFLOW_PORT": str(free_port()),
        "ROLLGUARD_STACK_SCHEDULER_HEALTH_PORT": str(free_port()),
        # Worker n's log server uses this + n - 1: take a free block of three.
        "ROLLGUARD_STACK_WORKER_LOG_PORT": str(_free_block(3)),
        "ROLLGUARD_STACK_TRIGGER_LOG_PORT": str(free_port()),
        "ROLLGUARD_STACK_PROMETHEUS_PORT": str(free_port()),
        "ROLLGUARD_STACK_ALERTMANAGER_PORT": str(free_port()),
        "ROLLGUARD_STACK_GRAFANA_PORT": str(free_port()),
        "ROLLGUARD_GUARD_PORT": str(free_port()),
        "ROLLGUARD_UI_PORT": str(free_port()),
        "ROLLGUARD_STACK_SCRAPE_SECONDS": "1",
        "ROLLGUARD_API_POLL_SECONDS": "1",
        "ROLLGUARD_STACK_READY_TIMEOUT_SECONDS": "600",
        "ROLLGUARD_STACK_STOP_TIMEOUT_SECONDS": "20",
    }


def _free_block(n: int) -> int:
    """The first of ``n`` consecutive ports that were free a moment ago."""
    for _ in range(50):
        base = free_port()
        if base + n >= 65536:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports")


def start_live_stack(*, executor: str = "LocalExecutor") -> LiveStack:
    """``rollguard stack up`` under a new temporary folder (outside pytest's tree, which other
    pytest sessions of the machine prune), its databases named ``rgtest_<random>_*``, then
    ``rollguard stack env`` so that commands run through :meth:`LiveStack.rollguard` use it.

    Raises:
        AssertionError: ``stack up`` failed (with its output and the service logs).
    """
    prefix = f"rgtest_{uuid.uuid4().hex[:8]}"
    home = Path(tempfile.mkdtemp(prefix="rollguard-live-")) / "home"
    stack = LiveStack(home, stack_env(home, prefix, executor=executor), prefix)
    try:
        stack.rollguard("stack", "up", "--json", timeout=1500)
        stack.env.update(stack.rollguard("stack", "env", "--json"))
    except BaseException:
        print(stack.logs())
        stop_live_stack(stack)
        raise
    return stack


def stop_live_stack(stack: LiveStack) -> None:
    """``rollguard stack down``, then drop the stack's databases and delete its Redis keys
    (only those: names and keys carry the stack's own prefix)."""
    subprocess.run(
        [venv_bin("rollguard"), "stack", "down"], env={**os.environ, **stack.env},
        capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    with psycopg.connect(**PG, autocommit=True) as conn:  # type: ignore[arg-type]
        names = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{stack.prefix}\\_%",)
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    try:
        import redis as redis_lib

        client = redis_lib.Redis(*REDIS, socket_timeout=3)
        keys = list(client.scan_iter(match=f"{stack.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except Exception as exc:  # noqa: BLE001 - Redis absent: nothing of ours is there
        print(f"redis clean-up skipped: {exc}")
    shutil.rmtree(stack.home.parent, ignore_errors=True)
