"""Open the monitoring store for a command: migrated, or a clear error saying how to migrate."""

from __future__ import annotations

from sqlalchemy import Engine

from rollguard import db
from rollguard.errors import ConfigurationError
from rollguard.home import ensure_home_location
from rollguard.settings import Settings


def open_store(settings: Settings) -> Engine:
    """An engine on the monitoring store, at the newest schema revision.

    The embedded default (SQLite under ``ROLLGUARD_HOME``) is migrated on first use so that a
    newcomer needs no extra step; a configured server database must be migrated explicitly with
    ``rollguard db upgrade`` (schema changes on shared databases are an operator's decision).
    A home opened at another path than it was recorded at has its stored paths rewritten first
    (:func:`rollguard.home.ensure_home_location`; docs/operations.md, "Moving a home").

    Raises:
        ConfigurationError: a configured database is not at the newest revision.
    """
    url = settings.monitoring_db_url
    head = db.head_revision()
    if settings.database_url is None:
        settings.ensure_dirs()
        if db.current_revision(url) != head:
            db.upgrade(url)
    else:
        current = db.current_revision(url)
        if current != head:
            raise ConfigurationError(
                f"the monitoring store is at revision {current or 'none'}, this code needs {head}: "
                "run `rollguard db upgrade`"
            )
    ensure_home_location(settings)
    return db.make_engine(url)
