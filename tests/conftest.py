"""Shared fixtures: settings under a temporary home, a PostgreSQL database of our own per session,
and a real MLflow tracking server on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollguard.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "ROLLGUARD_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _isolated_environment() -> Iterator[None]:
    """Restore the environment after each test: MLflow's ``set_tracking_uri`` exports
    ``MLFLOW_TRACKING_URI``, which the settings read, and nothing may leak into the next test."""
    from rollguard.settings import get_settings

    saved = dict(os.environ)
    get_settings.cache_clear()
    yield
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


@pytest.fixture
def embedded_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``ROLLGUARD_*`` or ``MLFLOW_*`` variable for this test: the embedded default. A module
    fixture that ran ``mlflow.set_tracking_uri`` (which exports ``MLFLOW_TRACKING_URI``) before
    :func:`_isolated_environment` took its snapshot would otherwise point the settings at a server
    for every later test of the session."""
    for name in [k for k in os.environ if k.startswith(("ROLLGUARD_", "MLFLOW_"))]:
        monkeypatch.delenv(name)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty ROLLGUARD_HOME."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    """Embedded-default settings under a temporary home (SQLite, local files)."""
    return Settings(home=home, env="test", _env_file=None)  # type: ignore[call-arg]


def _pg_reachable() -> str | None:
    """None when PostgreSQL answers at PG_ADMIN_URL, else the reason it does not."""
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(PG_ADMIN_URL)
        with psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            dbname=url.database,
            connect_timeout=3,
        ):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, dropped after the session.

    Skips (with the reason) when no server answers; CI's ``.ci/run`` fails on any skip.
    """
    reason = _pg_reachable()
    if reason:
        pytest.skip(reason)
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    name = f"rollguard_test_{uuid.uuid4().hex[:10]}"
    conninfo = dict(
        host=admin.host, port=admin.port or 5432, user=admin.username, dbname=admin.database
    )
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def replays() -> dict[str, object]:
    """One :class:`simulation.replay.Replay` per built-in use case, shared by the session's
    decision-quality tests (each caches the rows it built and the models it trained)."""
    from simulation.replay import Replay

    return {name: Replay(name) for name in ("cdnow", "hotel")}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real MLflow tracking server (SQLite backend, served artifacts) on loopback."""
    from tests.support.servers import start_mlflow_server

    root = tmp_path_factory.mktemp("mlflow-server")
    server = start_mlflow_server(root, log_dir=root / "logs")
    try:
        yield server.url
    finally:
        server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ROLLGUARD_FAIL_ON_SKIP=1 (set by ``.ci/run``), any skipped test fails the run: CI has
    every server installed, so a skip there means a test silently did not run."""
    if os.environ.get("ROLLGUARD_FAIL_ON_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.write_line(
            f"ROLLGUARD_FAIL_ON_SKIP=1: {len(skipped)} test(s) skipped; failing the run", red=True
        )
        session.exitstatus = 1
