"""The monitoring store's migrations run on SQLite and on the machine's PostgreSQL, and agree with
the models (autogenerate finds no difference)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from rollguard import db
from rollguard.db.models import Base
from rollguard.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


def _diff(url: str) -> list:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_migrations_match_the_models(store_url: str) -> None:
    db.upgrade(store_url)
    assert db.current_revision(store_url) == db.head_revision()
    assert _diff(store_url) == []


def test_downgrade_to_base_and_back(store_url: str) -> None:
    db.upgrade(store_url)
    db.upgrade(store_url)  # idempotent
    from alembic import command

    command.downgrade(db.alembic_config(store_url), "base")
    engine = db.make_engine(store_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    db.upgrade(store_url)
    assert _diff(store_url) == []


@pytest.mark.postgres
def test_ingestion_runs_unchanged_on_postgresql(postgres_url: str, home: Path) -> None:
    from domain.warehouse import ingested_weeks, load_records
    from pipeline import feed
    from pipeline.ingest import ingest_landing
    from rollguard.store import open_store

    settings = Settings(home=home, database_url=postgres_url)
    db.upgrade(postgres_url)
    engine = open_store(settings)
    with engine.begin() as conn:  # the session database is shared by tests: start clean
        conn.exec_driver_sql("DELETE FROM ingestion_ledger")
    feed.replay(settings, weeks=3)
    assert len(ingest_landing(settings, engine=engine).accepted) == 3
    assert len(ingest_landing(settings, engine=engine).skipped) == 3
    assert ingested_weeks(settings, engine=engine) == ["1997-W01", "1997-W02", "1997-W03"]
    assert len(load_records(settings, engine=engine)) == 1129 + 1801 + 1963


def test_configured_store_must_be_migrated_explicitly(tmp_path: Path) -> None:
    from rollguard.errors import ConfigurationError
    from rollguard.store import open_store

    url = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(ConfigurationError, match="run `rollguard db upgrade`"):
        open_store(Settings(home=tmp_path / "h", database_url=url))
    db.upgrade(url)
    open_store(Settings(home=tmp_path / "h", database_url=url)).dispose()
