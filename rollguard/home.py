"""Where a home was created, and what a moved or copied home rewrites (docs/operations.md,
"Moving a home").

A home's databases hold absolute paths of the folder they were written in: MLflow keeps each
experiment's ``artifact_location``, each run's ``artifact_uri``, each model version's ``source``
and ``storage_location`` and each logged model's ``artifact_location`` as ``file://`` URIs, and
the monitoring store's ingestion ledger keeps each batch's ``warehouse_path`` and
``quarantine_path``. Copied or moved elsewhere, those rows would still point into the old folder
(or to nothing). So a home records where it lives in a marker file, ``home.json``; when a home is
opened at another path than the one recorded (:func:`ensure_home_location`, called by
:func:`rollguard.store.open_store`, :func:`rollguard.mlflow_client.mlflow_client` and the model
server at start), every text column of its databases is rewritten from the old path to the new
one, one transaction per database, and the marker is updated last. The rewrite is idempotent: a
second run finds nothing to change. ``rollguard restore`` runs the same rewrite
(:func:`relocate_home`).

*Why a rewrite and not paths relative to the artifact root:* MLflow resolves the stored
``file://`` URIs itself (the registry's download URI of a version is its ``storage_location``);
a relative location is not something its SQL store accepts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from sqlalchemy import Enum, String, inspect, text
from sqlalchemy.engine import make_url

from rollguard import db
from rollguard.errors import ConfigurationError
from rollguard.files import write_atomic
from rollguard.settings import Settings

log = logging.getLogger(__name__)

#: The marker file in a home: the absolute path the home was last opened at.
MARKER = "home.json"
#: Tracking URIs whose server owns its own backend and artifacts (nothing here to rewrite).
_SERVER_SCHEMES = ("http://", "https://", "databricks")


@dataclass(frozen=True)
class Relocation:
    """One rewrite of a home's stored paths.

    Attributes:
        old: the path the home was recorded at.
        new: the path it is opened at now.
        rows: rows changed per database role (``monitoring``, ``mlflow``, ``optuna``).
    """

    old: Path
    new: Path
    rows: dict[str, int]


def home_databases(settings: Settings) -> dict[str, str]:
    """The SQLAlchemy URLs of the databases that may hold the home's paths, by role
    (``monitoring``, ``mlflow``, ``optuna``); MLflow is left out when a tracking server owns it."""
    urls = {"monitoring": settings.monitoring_db_url, "optuna": settings.optuna_url}
    if not settings.tracking_uri.startswith(_SERVER_SCHEMES):
        urls["mlflow"] = settings.tracking_uri
    return urls


def local_databases(settings: Settings) -> dict[str, str]:
    """:func:`home_databases` that are existing SQLite files inside the home: the ones a copy of
    the home owns alone. A database on a server (PostgreSQL) is shared by every copy of the home pointed
    at it, so opening a copy never rewrites it; only ``rollguard restore``, which fills empty
    databases of its own, does (docs/operations.md, "Moving a home")."""
    local = {}
    for role, url in home_databases(settings).items():
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            continue
        path = Path(parsed.database).absolute()
        if path.is_relative_to(settings.home) and path.is_file():
            local[role] = url
    return local


def recorded_home(home: Path) -> Path | None:
    """The path recorded in ``home``'s marker, or None when it has none (a new home, or one
    written by a Rollguard older than the marker).

    Raises:
        ConfigurationError: the marker exists but is not the JSON this module writes.
    """
    marker = home / MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        return Path(str(data["path"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"{marker}: not a Rollguard home marker ({exc}); delete it if this home was not "
            "moved, see docs/operations.md, 'Moving a home'"
        ) from exc


def write_marker(home: Path) -> None:
    """Record ``home``'s current absolute path in its marker (atomic write)."""
    body = {"path": str(home), "recorded_at": datetime.now(UTC).isoformat()}
    write_atomic(home / MARKER, (json.dumps(body, indent=2) + "\n").encode())


def _inferred_home(settings: Settings) -> Path | None:
    """The home a marker-less home was created at, read from the experiments' artifact locations
    (``file://<home>/mlartifacts``) of the home's own MLflow backend (a SQLite file inside it),
    or None when nothing tells."""
    url = home_databases(settings).get("mlflow")
    if url is None or make_url(url).get_backend_name() != "sqlite":
        return None
    database = make_url(url).database
    if not database or not Path(database).exists():
        return None
    if not Path(database).absolute().is_relative_to(settings.home):
        return None  # a backend outside the home may hold other homes' experiments
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("experiments"):
                return None
            locations = conn.execute(text("SELECT artifact_location FROM experiments")).scalars()
            for location in locations:
                if location and location.startswith("file://") and "/mlartifacts" in location:
                    path = url2pathname(urlparse(location).path)  # file:// URIs are %-encoded
                    return Path(path.rsplit("/mlartifacts", 1)[0])
    finally:
        engine.dispose()
    return None


def _replacements(old: Path, new: Path) -> list[tuple[str, str]]:
    """(old, new) substrings to rewrite: the ``file://`` URI form when it differs from the plain
    path (percent-encoded characters), then the plain path, each ending in ``/``."""
    pairs = []
    old_uri, new_uri = old.as_uri(), new.as_uri()
    if old_uri != f"file://{old}":
        pairs.append((old_uri + "/", new_uri + "/"))
    pairs.append((f"{old}/", f"{new}/"))
    return pairs


def rewrite_paths(url: str, old: Path, new: Path) -> int:
    """Rewrite ``old`` to ``new`` in every text column of every table of the database at
    ``url``, in one transaction; returns the rows changed (0 when the database does not exist).
    Idempotent when neither path lies inside the other (:func:`relocate_home` refuses that)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return 0
    engine = db.make_engine(url)
    changed = 0
    try:
        with engine.begin() as conn:
            quote = conn.dialect.identifier_preparer.quote
            inspector = inspect(conn)
            for table in inspector.get_table_names():
                for column in inspector.get_columns(table):
                    kind = column["type"]
                    if not isinstance(kind, String) or isinstance(kind, Enum):
                        continue  # an enum (Optuna's trial states) holds no path
                    col = quote(column["name"])
                    for before, after in _replacements(old, new):
                        pattern = "%" + before.replace("\\", "\\\\").replace("%", "\\%")
                        pattern = pattern.replace("_", "\\_") + "%"
                        update = (  # identifiers quoted by the dialect, values bound
                            f"UPDATE {quote(table)} SET {col} = replace({col}, :old, :new) "  # noqa: S608
                            f"WHERE {col} LIKE :pattern ESCAPE '\\'"
                        )
                        result = conn.execute(
                            text(update), {"old": before, "new": after, "pattern": pattern}
                        )
                        changed += max(result.rowcount or 0, 0)
    finally:
        engine.dispose()
    return changed


def relocate_home(
    settings: Settings, old: Path, databases: dict[str, str] | None = None
) -> Relocation:
    """Rewrite the paths of ``old`` to ``settings.home`` in ``databases`` (role to URL; default
    every one of :func:`home_databases`, as after a restore), then record the new path in the
    marker; logged.

    Raises:
        ConfigurationError: one path lies inside the other (the rewrite would not be
            idempotent).
    """
    new = settings.home
    if new.is_relative_to(old) or old.is_relative_to(new):
        raise ConfigurationError(
            f"home {new} was recorded at {old}: one lies inside the other, so its stored paths "
            "cannot be rewritten safely; move it beside the old folder (docs/operations.md, "
            "'Moving a home')"
        )
    targets = home_databases(settings) if databases is None else databases
    rows = {role: rewrite_paths(url, old, new) for role, url in targets.items()}
    write_marker(new)
    log.warning(
        "home moved from %s to %s: stored paths rewritten (%s); see docs/operations.md, "
        "'Moving a home'",
        old,
        new,
        ", ".join(f"{role} {n} rows" for role, n in rows.items()),
    )
    return Relocation(old=old, new=new, rows=rows)


def ensure_home_location(settings: Settings) -> Relocation | None:
    """Make the home's stored paths those of where it is opened now: the one owner of the
    decision to rewrite (docs/operations.md, "Moving a home").

    Does nothing when the home folder does not exist yet, or when none of its databases is a
    SQLite file inside it (:func:`local_databases`: databases on a server are shared with every
    copy of the home and never rewritten here). A home without a marker gets one (its original
    path inferred from MLflow's experiments when it has any, else the current path). Returns
    the :class:`Relocation` done, or None.

    Raises:
        ConfigurationError: an unreadable marker, or nested old and new paths.
    """
    home = settings.home
    local = local_databases(settings)
    if not home.is_dir() or not local:
        return None
    recorded = recorded_home(home) or _inferred_home(settings)
    if recorded is None or recorded == home:
        if recorded_home(home) is None:
            write_marker(home)
        return None
    return relocate_home(settings, recorded, local)


def describe(relocation: Relocation | None) -> dict[str, Any] | None:
    """A JSON-ready summary of ``relocation`` (None stays None)."""
    if relocation is None:
        return None
    return {"from": str(relocation.old), "to": str(relocation.new), "rows": relocation.rows}
