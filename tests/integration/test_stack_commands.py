"""The stack's own commands and settings, run for real on loopback without Docker.

A private PostgreSQL cluster (password authentication over TCP, like the postgres image) is
initialised by ``deploy/postgres/init``; then the services' commands run with the environment that
docker-compose.yml gives them (interpolated from a generated .env), with only the host names
``postgres``/``mlflow`` pointed at loopback: ``rollguard db upgrade`` as the ``rollguard`` role,
Grafana's read-only role against the migrated store, the MLflow tracking server with served
artifacts, and Airflow's one-shot init (metadata migration on psycopg 3, admin user file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.api_servers import PG_BIN, PrivatePostgres
from tests.support.compose import ROOT, bind_mounts, environment_of, interpolate, load_compose
from tests.support.servers import ServerProcess, free_port, venv_bin

sys.path.insert(0, str(ROOT / "deploy"))
import generate_env  # noqa: E402

pytestmark = [pytest.mark.slow]


def _env() -> dict[str, str]:
    env = {}
    for line in generate_env.render((ROOT / ".env.example").read_text()).splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            env[name] = value
    return env


DOTENV = _env()
COMPOSE = interpolate(load_compose(), DOTENV)


class ScramPostgres(PrivatePostgres):
    """A private cluster that, like the postgres image, trusts the local socket (used by the init
    scripts) and asks for a SCRAM password on TCP."""

    def init(self) -> ScramPostgres:
        super().init()
        hba = self.data / "pg_hba.conf"
        lines = [
            "local all all trust",
            "host all all 127.0.0.1/32 scram-sha-256",
            "host all all ::1/128 scram-sha-256",
        ]
        self._run("bash", "-c", f"printf '%s\\n' {' '.join(repr(x) for x in lines)} > {hba}")
        return self


@pytest.fixture(scope="module")
def stack_pg() -> Iterator[ScramPostgres]:
    reason = PrivatePostgres.unavailable()
    if reason:
        pytest.skip(reason)
    # Outside pytest's temporary tree: pytest keeps that tree private to root (mode 700) while
    # the module's other tests run, and the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="rollguard-stack-pg-"))
    server = ScramPostgres(root / "pg").init()
    server.start()
    try:
        env = {
            **os.environ,
            **environment_of(COMPOSE["services"]["postgres"]),
            "PGHOST": str(server.root),
            "PGPORT": str(server.port),
            "PATH": f"{PG_BIN}:{os.environ['PATH']}",
        }
        proc = subprocess.run(
            ["bash", str(ROOT / "deploy/postgres/init/10-rollguard-databases.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _local(url: str, pg: ScramPostgres) -> str:
    """A compose URL with the service host names pointed at the loopback servers."""
    return url.replace("@postgres:5432/", f"@127.0.0.1:{pg.port}/")


def _connect(pg: ScramPostgres, user: str, password: str, dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=pg.port, user=user, password=password, dbname=dbname,
        connect_timeout=5, autocommit=True,
    )  # fmt: skip


def test_each_role_reaches_only_its_own_database(stack_pg: ScramPostgres) -> None:
    roles = {
        "mlflow": ("MLFLOW_DB_PASSWORD", "mlflow"),
        "airflow": ("AIRFLOW_DB_PASSWORD", "airflow"),
        "rollguard": ("ROLLGUARD_DB_PASSWORD", "rollguard"),
    }
    for user, (var, dbname) in roles.items():
        with _connect(stack_pg, user, DOTENV[var], dbname) as conn:
            conn.execute("CREATE TABLE probe (x int)")  # the owner may create in public
            conn.execute("DROP TABLE probe")
    with _connect(stack_pg, "rollguard", DOTENV["ROLLGUARD_DB_PASSWORD"], "optuna"):
        pass
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(stack_pg, "mlflow", "wrong-password", "mlflow")
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        _connect(stack_pg, "mlflow", DOTENV["MLFLOW_DB_PASSWORD"], "airflow")


def test_migrated_store_is_read_only_for_grafana(stack_pg: ScramPostgres) -> None:
    env = {
        **os.environ,
        **environment_of(COMPOSE["services"]["rollguard-migrate"]),
    }
    env["ROLLGUARD_DATABASE_URL"] = _local(env["ROLLGUARD_DATABASE_URL"], stack_pg)
    env["ROLLGUARD_HOME"] = str(stack_pg.root / "home")
    command = COMPOSE["services"]["rollguard-migrate"]["command"]
    proc = subprocess.run(
        [venv_bin("rollguard"), *command, "--json"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["revision"]

    grafana = environment_of(COMPOSE["services"]["grafana"])
    with _connect(
        stack_pg, grafana["ROLLGUARD_STORE_USER"], grafana["ROLLGUARD_STORE_PASSWORD"],
        grafana["ROLLGUARD_STORE_DATABASE"],
    ) as conn:  # fmt: skip
        assert conn.execute("SELECT count(*) FROM monitoring_results").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM alias_audit").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM alias_audit")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (x int)")


def test_mlflow_server_runs_with_the_stack_command(
    stack_pg: ScramPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compose command and environment: Rollguard's authenticated app (anonymous clients
    refused, the admin from MLFLOW_ADMIN_PASSWORD), PostgreSQL backend, artifacts served from the
    volume path, and the Host names the other services use accepted (MLflow 3 refuses unknown
    ones)."""
    service = COMPOSE["services"]["mlflow"]
    env = {**os.environ, **environment_of(service)}
    env["MLFLOW_BACKEND_STORE_URI"] = _local(env["MLFLOW_BACKEND_STORE_URI"], stack_pg)
    # The shipped auth configuration, mounted where the compose file mounts it, with its user
    # store moved from the volume to this test's folder.
    mounted = dict((target, source) for source, target in bind_mounts(service))
    shipped = ROOT / mounted[env["MLFLOW_AUTH_CONFIG_PATH"]]
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        shipped.read_text().replace(
            "sqlite:////var/lib/mlflow/basic_auth.db", f"sqlite:///{tmp_path / 'basic_auth.db'}"
        )
    )
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    env["MLFLOW_TRACKING_USERNAME"] = env["MLFLOW_TRACKING_PASSWORD"] = ""
    admin = ("admin", env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    port = free_port()
    artifacts = tmp_path / "artifacts"
    argv = [venv_bin("mlflow")]
    for arg in service["command"]:
        arg = arg.replace("--host=0.0.0.0", "--host=127.0.0.1").replace(
            "--port=5000", f"--port={port}"
        )
        arg = arg.replace(
            "--artifacts-destination=/var/lib/mlflow/artifacts",
            f"--artifacts-destination={artifacts}",
        )
        argv.append(arg)
    assert "--serve-artifacts" in argv and f"--artifacts-destination={artifacts}" in argv
    server = ServerProcess(
        "mlflow-stack", argv, port=port, ready_path="/health", log_dir=tmp_path, env=env
    ).start(timeout=180)
    try:
        base = f"http://127.0.0.1:{port}"
        search = "/api/2.0/mlflow/experiments/search?max_results=1"
        assert httpx.get(base + search, timeout=30).status_code == 401  # anonymous
        for host in ("mlflow:5000", "localhost:5000", "mlflow"):
            answer = httpx.get(base + search, headers={"Host": host}, auth=admin, timeout=30)
            assert answer.status_code == 200, (host, answer.text)
        refused = httpx.get(
            base + search, headers={"Host": "attacker.example"}, auth=admin, timeout=30
        )
        assert refused.status_code in (400, 403), refused.text

        from mlflow import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])

        client = MlflowClient(tracking_uri=base)
        experiment = client.create_experiment("stack-probe")
        run = client.create_run(experiment)
        note = tmp_path / "note.txt"
        note.write_text("served artifact")
        client.log_artifact(run.info.run_id, str(note))
        assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")
        assert [p.read_text() for p in artifacts.rglob("note.txt")] == ["served artifact"]
    finally:
        server.stop()


def test_airflow_init_migrates_and_writes_the_admin_user(
    stack_pg: ScramPostgres, tmp_path: Path
) -> None:
    """deploy/airflow/init.sh with the airflow-init environment: Airflow's metadata database is
    migrated on psycopg 3 (sync and async URLs) and the admin's password file is written."""
    service = COMPOSE["services"]["airflow-init"]
    env = {**os.environ, **environment_of(service)}
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"):
        env[key] = _local(env[key], stack_pg)
    passwords = tmp_path / "auth" / "passwords.json"
    passwords.parent.mkdir()
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords)
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "pipeline" / "dags")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    assert service["entrypoint"] == ["/bin/bash"]
    assert service["command"] == ["/opt/rollguard/deploy/init.sh"]
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy/airflow/init.sh")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(passwords.read_text()) == {"admin": DOTENV["AIRFLOW_ADMIN_PASSWORD"]}
    assert passwords.stat().st_mode & 0o777 == 0o600
    with _connect(stack_pg, "airflow", DOTENV["AIRFLOW_DB_PASSWORD"], "airflow") as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    # idempotent: a second `docker compose up` runs the init again
    again = subprocess.run(
        ["bash", str(ROOT / "deploy/airflow/init.sh")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
