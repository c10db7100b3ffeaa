"""The home marker and the rewrite of a moved home's stored paths (rollguard/home.py), on real
SQLite files: every text column, idempotent, the marker last, nested moves refused."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from rollguard.errors import ConfigurationError
from rollguard.home import MARKER, ensure_home_location, recorded_home, rewrite_paths
from rollguard.settings import Settings

pytestmark = pytest.mark.usefixtures("embedded_environment")


def _settings(home: Path) -> Settings:
    return Settings(home=home, env="test", _env_file=None)  # type: ignore[call-arg]


def _seed(home: Path) -> None:
    """An MLflow-like and a store-like database naming ``home`` the ways the real ones do."""
    home.mkdir(parents=True)
    with sqlite3.connect(home / "mlflow.db") as conn:
        conn.execute("CREATE TABLE experiments (name TEXT, artifact_location VARCHAR(256))")
        conn.execute("CREATE TABLE model_versions (version INTEGER, storage_location TEXT)")
        conn.execute(
            "INSERT INTO experiments VALUES ('t', ?)", (f"{(home / 'mlartifacts').as_uri()}",)
        )
        conn.execute(
            "INSERT INTO model_versions VALUES (1, ?)",
            (f"{(home / 'mlartifacts' / 'models' / 'm-1' / 'artifacts').as_uri()}",),
        )
    with sqlite3.connect(home / "monitoring.db") as conn:
        conn.execute("CREATE TABLE ingestion_ledger (n INTEGER, warehouse_path TEXT, note TEXT)")
        conn.execute(
            "INSERT INTO ingestion_ledger VALUES (1, ?, 'keep %_ as is')",
            (str(home / "warehouse" / "records" / "week=1997-W01" / "b.parquet"),),
        )


def _texts(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


def test_a_copied_home_rewrites_every_stored_path_once(tmp_path: Path) -> None:
    old = tmp_path / "old home"  # a space: the file:// form is percent-encoded
    _seed(old)
    assert ensure_home_location(_settings(old)) is None  # first open: the marker is written
    assert recorded_home(old) == old

    new = tmp_path / "new_home"
    shutil.copytree(old, new)
    relocation = ensure_home_location(_settings(new))
    assert relocation is not None and relocation.old == old and relocation.new == new
    # optuna.db does not exist in this home: only existing SQLite files of the home are its own.
    assert relocation.rows == {"monitoring": 1, "mlflow": 2}
    for name in ("mlflow.db", "monitoring.db"):
        dump = _texts(new / name)
        assert str(old) not in dump and old.as_uri() not in dump
    assert (new / "mlartifacts").as_uri() in _texts(new / "mlflow.db")
    assert "keep %_ as is" in _texts(new / "monitoring.db")
    assert json.loads((new / MARKER).read_text())["path"] == str(new)
    # Opened again: nothing to do; the original is untouched.
    assert ensure_home_location(_settings(new)) is None
    assert rewrite_paths(f"sqlite:///{new / 'mlflow.db'}", old, new) == 0
    assert str(old / "warehouse") in _texts(old / "monitoring.db")


def test_a_home_without_marker_takes_its_origin_from_mlflow(tmp_path: Path) -> None:
    old = tmp_path / "a"
    _seed(old)  # written before the marker existed
    new = tmp_path / "b"
    old.rename(new)
    relocation = ensure_home_location(_settings(new))
    assert relocation is not None and relocation.old == old
    assert str(old) + "/" not in _texts(new / "monitoring.db")


def test_a_move_into_the_old_home_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "h"
    _seed(old)
    ensure_home_location(_settings(old))
    inner = old / "inner"
    shutil.copytree(old, inner, ignore=shutil.ignore_patterns("inner"))
    with pytest.raises(ConfigurationError, match="one lies inside the other"):
        ensure_home_location(_settings(inner))


def test_a_copy_never_rewrites_a_store_outside_the_home(tmp_path: Path) -> None:
    """A store outside the home (a server, or a SQLite file elsewhere) is shared by every copy of
    the home: opening a copy leaves it alone, so the original keeps working."""
    old = tmp_path / "old"
    _seed(old)
    shared = tmp_path / "shared.db"
    shutil.move(old / "monitoring.db", shared)
    url = f"sqlite:///{shared}"
    settings = Settings(home=old, env="test", database_url=url, _env_file=None)  # type: ignore[call-arg]
    ensure_home_location(settings)
    new = tmp_path / "copy"
    shutil.copytree(old, new)
    relocation = ensure_home_location(settings.model_copy(update={"home": new}))
    assert relocation is not None and set(relocation.rows) == {"mlflow"}
    assert str(old / "warehouse") in _texts(shared)  # the original's paths, untouched


@pytest.mark.postgres
def test_rewrite_skips_enum_columns_on_postgresql(postgres_url: str) -> None:
    """Optuna keeps trial states in a PostgreSQL enum; ``LIKE`` on an enum is an error there, so
    enum columns (which hold no path) are skipped and the text columns still rewritten."""
    suffix = uuid.uuid4().hex[:8]
    table, kind = f"trials_{suffix}", f"trialstate_{suffix}"
    conninfo = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE TYPE {kind} AS ENUM ('RUNNING', 'COMPLETE')")
        conn.execute(f"CREATE TABLE {table} (state {kind}, note TEXT)")
        conn.execute(f"INSERT INTO {table} VALUES ('COMPLETE', '/srv/old/optuna/x')")  # noqa: S608 - the test's own table
    try:
        assert rewrite_paths(postgres_url, Path("/srv/old"), Path("/srv/new")) >= 1
        with psycopg.connect(conninfo) as conn:
            row = conn.execute(f"SELECT state::text, note FROM {table}").fetchone()  # noqa: S608
        assert row == ("COMPLETE", "/srv/new/optuna/x")
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")
            conn.execute(f"DROP TYPE {kind}")


def test_a_home_without_its_own_databases_writes_nothing(tmp_path: Path) -> None:
    """The stack's services (every store on a server) may run on a read-only home: opening it
    writes no marker and rewrites nothing."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    sqlite3.connect(tmp_path / "elsewhere.db").close()
    home.chmod(0o555)
    try:
        settings = Settings(home=home, env="test", database_url=url, _env_file=None)  # type: ignore[call-arg]
        assert ensure_home_location(settings) is None
        assert not (home / MARKER).exists()
    finally:
        home.chmod(0o755)
