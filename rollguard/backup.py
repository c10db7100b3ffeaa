"""``rollguard backup`` and ``rollguard restore``: one compressed archive of a home's whole state
(docs/operations.md, "Backup and restore").

The archive (``tar`` + gzip) holds:

- ``home/...``: every regular file of ``ROLLGUARD_HOME`` (warehouse, quarantine, landing zone,
  reports, the local MLflow artifacts ``mlartifacts/``, the prediction-log spool, Airflow's
  embedded metadata), where each SQLite database (the monitoring store with the ingestion ledger,
  the MLflow backend, Optuna, Airflow) is a consistent snapshot taken with SQLite's online backup
  API, never a copy of a file being written; WAL/journal files and lock folders are left out;
- ``databases/<role>.pgdump``: a ``pg_dump --format=custom`` of each store configured on
  PostgreSQL (roles ``monitoring``, ``mlflow``, ``optuna``); ``databases/<role>.sqlite`` for a
  SQLite store configured outside the home;
- ``manifest.json`` (last): Rollguard's and its libraries' versions, the SHA-256 of every other
  member, the monitoring store's alembic revision, the use case, the model name, the original
  home and the creation time.

A tracking *server* (``http(s)://``) owns its backend and artifact store; it is not in the
archive and the manifest says so (docs/operations.md names what to back up instead).

Restore verifies every checksum, refuses a schema revision other than this code's head, goes
into an empty home (and, for PostgreSQL stores, empty databases), then rewrites the original
home's paths to the new one (:func:`rollguard.home.relocate_home`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url

from rollguard import db
from rollguard.errors import RollguardError
from rollguard.files import sha256_file
from rollguard.home import MARKER, home_databases, relocate_home, write_marker
from rollguard.settings import Settings

#: Version of the archive layout; restore refuses other versions.
ARCHIVE_FORMAT = 1
MANIFEST = "manifest.json"
#: Libraries whose versions the manifest records (the stores' formats depend on them).
PACKAGES = ("rollguard", "mlflow", "xgboost", "optuna", "sqlalchemy", "alembic")
#: Files of a home that are not state: SQLite side files (the snapshot holds their content) and
#: lock files (held by running processes).
_SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal")
_SQLITE_HEADER = b"SQLite format 3\x00"
_GZIP_LEVEL = 6  # gzip's own default: what `tar czf` does


class BackupError(RollguardError):
    """A backup cannot be written, or an archive cannot be restored (the message says which
    file, database or check, and what to do)."""

    kind = "backup"


@dataclass(frozen=True)
class BackupResult:
    """What ``rollguard backup`` wrote: the archive, its size (bytes), member count, the seconds
    taken and the manifest."""

    archive: Path
    size_bytes: int
    files: int
    seconds: float
    manifest: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RestoreResult:
    """What ``rollguard restore`` did: the home written, the databases restored (role to target,
    passwords hidden), the rows whose paths were rewritten, and the seconds taken."""

    home: Path
    databases: dict[str, str]
    rewritten_rows: dict[str, int]
    seconds: float
    schema_revision: str | None


# --- backup ----------------------------------------------------------------------------------------
def default_archive_name(settings: Settings, now: datetime | None = None) -> Path:
    """``rollguard-backup-<use case>-<UTC time>.tar.gz`` in the current directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"rollguard-backup-{settings.usecase}-{stamp}.tar.gz").absolute()


def create_backup(settings: Settings, output: Path | None = None) -> BackupResult:
    """Write one archive of the state of ``settings`` (see the module docstring) to ``output``
    (default :func:`default_archive_name`), through a temporary file and a rename.

    Safe while the API, the pipeline and the guard write: SQLite stores are copied with the
    online backup API (one read transaction: a consistent snapshot), PostgreSQL stores with
    ``pg_dump`` (one repeatable-read snapshot).

    Raises:
        BackupError: the home does not exist, the output exists, ``pg_dump`` is missing, older
            than the server or fails.
    """
    started = time.monotonic()
    home = settings.home
    if not home.is_dir():
        raise BackupError(f"home {home} does not exist: nothing to back up (ROLLGUARD_HOME)")
    output = (output or default_archive_name(settings)).absolute()
    if output.exists():
        raise BackupError(f"{output} exists; choose another --output or move it away")
    if output.is_relative_to(home):
        raise BackupError(f"--output {output} lies inside the home {home}; write it elsewhere")
    store = make_url(db.normalize_url(settings.monitoring_db_url))
    if store.get_backend_name() == "sqlite" and not Path(store.database or "").is_file():
        raise BackupError(
            f"home {home} has no monitoring store ({store.database}): not a Rollguard home, or "
            "ROLLGUARD_HOME/ROLLGUARD_DATABASE_URL point elsewhere; nothing to back up"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    checksums: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix=".rollguard-backup-", dir=output.parent) as tmp:
        staging = Path(tmp)
        partial = staging / "archive.tar.gz"
        try:
            with tarfile.open(partial, "w:gz", compresslevel=_GZIP_LEVEL) as tar:
                databases = _add_databases(settings, tar, staging, checksums)
                _add_home_files(home, tar, staging, checksums)
                manifest = _manifest(settings, databases, checksums, staging)
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
        except sqlite3.Error as exc:
            raise BackupError(
                f"cannot snapshot a SQLite store of home {home} ({exc}); nothing was written"
            ) from None
        os.replace(partial, output)
    return BackupResult(
        archive=output,
        size_bytes=output.stat().st_size,
        files=len(checksums) + 1,
        seconds=round(time.monotonic() - started, 3),
        manifest=manifest,
    )


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(16) == _SQLITE_HEADER
    except OSError:
        return False


def sqlite_snapshot(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` to ``target`` with SQLite's online backup API, in one
    step: one read transaction, so the copy is the database as of one commit while writers
    (WAL mode) go on. Source: https://www.sqlite.org/backup.html."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            dst.close()
    finally:
        src.close()


def _walk_home(home: Path) -> Iterator[Path]:
    """Every file of the home to archive, in a stable order. Symbolic links are followed (a
    warehouse or artifact folder on another volume is state of the home and is archived as
    regular files under its name in the home); a link back to a folder already walked (a loop)
    is skipped (docs/operations.md, "What is in the archive")."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(home, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.endswith(".locks"))
        for name in sorted(files):
            path = Path(root) / name
            if name.endswith(_SKIPPED_SUFFIXES) or not path.is_file():
                continue
            yield path


def _add_home_files(
    home: Path, tar: tarfile.TarFile, staging: Path, checksums: dict[str, dict[str, Any]]
) -> None:
    """Every regular file of the home under ``home/``: SQLite databases as snapshots, the rest
    streamed with its checksum taken over the very bytes archived."""
    for path in _walk_home(home):
        arcname = f"home/{path.relative_to(home).as_posix()}"
        if arcname in checksums:
            continue
        if _is_sqlite(path):
            snapshot = staging / arcname  # kept until the manifest has read its revision
            sqlite_snapshot(path, snapshot)
            _add_file(tar, arcname, snapshot, checksums)
        else:
            _add_file(tar, arcname, path, checksums)


class _HashingReader(io.RawIOBase):
    """A file object that hashes what is read from it (what ``tarfile`` archives)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.digest = fh, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        return data


def _add_file(
    tar: tarfile.TarFile, arcname: str, path: Path, checksums: dict[str, dict[str, Any]]
) -> None:
    with path.open("rb") as fh:
        info = tar.gettarinfo(fileobj=fh, arcname=arcname)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        reader = _HashingReader(fh)
        tar.addfile(info, reader)  # reads exactly info.size bytes, even if the file grows
    checksums[arcname] = {"sha256": reader.digest.hexdigest(), "bytes": info.size}


def _add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without its password, and the environment carrying it (never on
    a command line, where ``ps`` would show it)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    bare = url.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), env


def _run_pg(tool: str, args: list[str], env: dict[str, str], what: str) -> None:
    """Run ``pg_dump``/``pg_restore``; a missing client or a client older than the server is
    reported in words.

    Raises:
        BackupError: the tool is not on PATH or fails.
    """
    if shutil.which(tool) is None:
        raise BackupError(
            f"{tool} is not on PATH: install the PostgreSQL client of the server's major version "
            "(Debian: postgresql-client-NN) to back up or restore a PostgreSQL store"
        )
    proc = subprocess.run(  # noqa: S603 - argv of a PostgreSQL client tool, no shell
        [tool, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[:400]
        if "server version mismatch" in proc.stderr or "unsupported version" in proc.stderr:
            detail = (
                f"the PostgreSQL client is older than the server: install a newer {tool} ({detail})"
            )
        raise BackupError(f"{tool} failed for {what}: {detail}")


def _add_databases(
    settings: Settings, tar: tarfile.TarFile, staging: Path, checksums: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Snapshot each store by role; those in the home are left to :func:`_add_home_files`."""
    entries: dict[str, dict[str, Any]] = {}
    for role, raw in home_databases(settings).items():
        url = make_url(db.normalize_url(raw))
        backend = url.get_backend_name()
        if backend == "sqlite":
            path = Path(url.database or "")
            if path.absolute().is_relative_to(settings.home):
                entries[role] = {
                    "engine": "sqlite",
                    "member": f"home/{path.absolute().relative_to(settings.home).as_posix()}",
                }
                continue
            if not path.exists():
                continue
            member = f"databases/{role}.sqlite"
            snapshot = staging / member
            sqlite_snapshot(path, snapshot)
            _add_file(tar, member, snapshot, checksums)
            entries[role] = {"engine": "sqlite", "member": member}
        elif backend == "postgresql":
            member = f"databases/{role}.pgdump"
            dump = staging / member
            dump.parent.mkdir(parents=True, exist_ok=True)
            conninfo, env = _libpq(url)
            _run_pg(
                "pg_dump",
                ["--format=custom", "--no-owner", "--no-privileges", f"--file={dump}", conninfo],
                env,
                f"the {role} store",
            )
            _add_file(tar, member, dump, checksums)
            entries[role] = {"engine": "postgresql", "member": member}
        else:
            raise BackupError(f"the {role} store's URL scheme {backend!r} cannot be backed up")
    if "mlflow" not in entries:
        entries["mlflow"] = {"engine": "server", "member": None}
    return entries


def _package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _sqlite_revision(path: Path) -> str | None:
    """The alembic revision recorded in the SQLite file at ``path`` (None when unmigrated)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()


def _manifest(
    settings: Settings,
    databases: dict[str, dict[str, Any]],
    checksums: dict[str, dict[str, Any]],
    staging: Path,
) -> dict[str, Any]:
    monitoring = databases.get("monitoring", {})
    if monitoring.get("engine") == "sqlite":
        revision = _sqlite_revision(staging / monitoring["member"])  # the archived bytes
    else:
        revision = db.current_revision(settings.monitoring_db_url)
    return {
        "format": ARCHIVE_FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "home": str(settings.home),
        "usecase": settings.usecase,
        "model_name": settings.model_name,
        "schema_revision": revision,
        "versions": _package_versions(),
        "databases": databases,
        "mlflow_artifacts": (
            "home/mlartifacts"
            if databases["mlflow"]["engine"] != "server"
            else "held by the tracking server: back up its artifact store (docs/operations.md)"
        ),
        "files": checksums,
    }


# --- restore ---------------------------------------------------------------------------------------
class _FileEntry(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class _DatabaseEntry(BaseModel):
    engine: Literal["sqlite", "postgresql", "server"]
    member: str | None = None


class _Manifest(BaseModel):
    """The fields of ``manifest.json`` that restore relies on (others are informational)."""

    model_config = ConfigDict(extra="allow")

    format: Literal[1]
    home: str = Field(min_length=2, pattern=r"^/")
    schema_revision: str | None
    files: dict[str, _FileEntry]
    databases: dict[Literal["monitoring", "mlflow", "optuna"], _DatabaseEntry]
    versions: dict[str, str | None] = {}

    @model_validator(mode="after")
    def _members_are_checked_files(self) -> _Manifest:
        """A dump is one of the archive's checked files; a SQLite store of the home is a file
        under ``home/`` (absent when the home had none yet)."""
        for role, entry in self.databases.items():
            member = entry.member or ""
            if entry.engine == "server":
                continue
            if member.startswith("home/") and entry.engine == "sqlite":
                continue
            if member not in self.files or not member.startswith("databases/"):
                raise ValueError(f"databases.{role}.member is not a checked file of the archive")
        return self


def read_manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    """The archive's manifest.

    Raises:
        BackupError: no manifest, not JSON, or a layout version this code does not read.
    """
    try:
        member = tar.extractfile(MANIFEST)
        manifest = json.loads(member.read()) if member is not None else None
    except (KeyError, ValueError) as exc:
        raise BackupError(
            f"{archive}: no readable {MANIFEST} ({exc}); not a Rollguard backup"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise BackupError(
            f"{archive}: archive format {manifest.get('format') if isinstance(manifest, dict) else '?'} "
            f"is not {ARCHIVE_FORMAT}; restore it with the Rollguard version that wrote it"
        )
    try:
        return _Manifest.model_validate(manifest).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise BackupError(
            f"{archive}: {MANIFEST} field {where}: {first['msg']}; archive altered or not a "
            "Rollguard backup"
        ) from None


def _refuse_nonempty_home(home: Path) -> None:
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise BackupError(
            f"target home {home} is not empty: restore goes into an empty or new folder "
            "(--home DIR), never over a home in use"
        )


def _extract(archive: Path, staging: Path) -> dict[str, Any]:
    """Extract ``archive`` into ``staging`` (members under ``home/`` and ``databases/`` only) and
    return its manifest, every checksum verified.

    Raises:
        BackupError: unreadable archive, a member outside the layout, a missing, extra or
            altered file.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                if m.name != MANIFEST and not m.name.startswith(("home/", "databases/")):
                    raise BackupError(
                        f"{archive}: unexpected member {m.name!r}; not a Rollguard backup"
                    )
                if not (m.isfile() or m.isdir()):
                    raise BackupError(
                        f"{archive}: member {m.name!r} is a link or special file; a Rollguard "
                        "backup holds regular files only (archive altered)"
                    )
            manifest = read_manifest(tar, archive)
            tar.extractall(
                staging, members=[m for m in members if m.name != MANIFEST], filter="data"
            )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"{archive}: cannot read the archive ({exc})") from None
    files: dict[str, dict[str, Any]] = manifest.get("files", {})
    present = {m.name for m in members if m.isfile() and m.name != MANIFEST}
    if present != set(files):
        odd = sorted(present ^ set(files))[:3]
        raise BackupError(
            f"{archive}: members and manifest differ ({', '.join(odd)}); archive altered"
        )
    for name, entry in files.items():
        if sha256_file(staging / name) != entry["sha256"]:
            raise BackupError(
                f"{archive}: checksum mismatch for {name}: the archive is corrupted or altered; "
                "nothing was restored"
            )
    return manifest


def _check_revision(manifest: dict[str, Any], staging: Path, archive: Path) -> None:
    """Refuse a store whose alembic revision is not this code's head, in the manifest or in the
    archived SQLite store itself."""
    head = db.head_revision()
    revision = manifest.get("schema_revision")
    if revision != head:
        raise BackupError(
            f"{archive}: its monitoring store is at schema revision {revision or 'none'}, this "
            f"Rollguard ({_package_versions()['rollguard']}) needs {head}: restore with Rollguard "
            f"{manifest.get('versions', {}).get('rollguard', '?')}, which wrote it, then upgrade"
        )
    entry = manifest.get("databases", {}).get("monitoring", {})
    if entry.get("engine") == "sqlite" and entry.get("member"):
        found = _sqlite_revision(staging / entry["member"])
        if found != revision:
            raise BackupError(
                f"{archive}: the manifest says schema revision {revision} but the archived "
                f"monitoring store is at {found or 'none'}; archive altered"
            )


def _target_url(target: Settings, role: str) -> str | None:
    return home_databases(target).get(role)


def _plan_databases(manifest: dict[str, Any], target: Settings, archive: Path) -> dict[str, str]:
    """Role to target URL for each PostgreSQL dump or outside-home SQLite file; refuses an engine
    change (a SQLite store into PostgreSQL or back) in words."""
    plan: dict[str, str] = {}
    for role, entry in manifest.get("databases", {}).items():
        engine, url = entry.get("engine"), _target_url(target, role)
        if engine == "server" or url is None:
            continue
        backend = make_url(db.normalize_url(url)).get_backend_name()
        inside = backend == "sqlite" and Path(
            make_url(url).database or ""
        ).absolute().is_relative_to(target.home)
        if engine == "sqlite" and str(entry["member"]).startswith("home/"):
            expected = (
                f"home/{Path(make_url(url).database or '').absolute().relative_to(target.home).as_posix()}"
                if inside
                else None
            )
            if expected != entry["member"]:
                raise BackupError(
                    f"{archive}: the {role} store is a SQLite file of the home; the target's "
                    f"{role} store is {make_url(url).render_as_string(hide_password=True)}: "
                    "restore with the embedded default (unset its URL), see docs/operations.md"
                )
            continue
        if engine == "postgresql" and backend != "postgresql":
            raise BackupError(
                f"{archive}: the {role} store is a PostgreSQL dump; point the target's {role} URL "
                "at an empty PostgreSQL database to restore it (docs/operations.md)"
            )
        if engine == "sqlite" and backend != "sqlite":
            raise BackupError(f"{archive}: the {role} store is SQLite; the target's is not")
        plan[role] = url
    return plan


def _refuse_nonempty_database(role: str, url: str) -> None:
    parsed = make_url(db.normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        if Path(parsed.database or "").exists():
            raise BackupError(
                f"the target {role} database {parsed.database} exists; restore needs a new file"
            )
        return
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise BackupError(
            f"the target {role} database {parsed.render_as_string(hide_password=True)} is not "
            f"empty ({len(tables)} tables): restore goes into an empty database"
        )


def _restore_database(role: str, url: str, source: Path) -> None:
    parsed = make_url(db.normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        target = Path(parsed.database or "")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return
    conninfo, env = _libpq(parsed)
    _run_pg(
        "pg_restore",
        ["--no-owner", "--no-privileges", "--exit-on-error", f"--dbname={conninfo}", str(source)],
        env,
        f"the {role} store",
    )


def _place_home(staged: Path, home: Path) -> None:
    """Move the staged home into ``home`` (a rename when ``home`` does not exist yet)."""
    if not staged.exists():
        staged.mkdir(parents=True)
    if not home.exists():
        os.replace(staged, home)
        return
    for child in staged.iterdir():
        os.replace(child, home / child.name)


def restore_backup(archive: Path, target: Settings) -> RestoreResult:
    """Restore ``archive`` into ``target.home`` (which must be empty or absent) and into the
    target's PostgreSQL stores (which must be empty), then rewrite the original home's paths.

    Order: refuse a non-empty home; extract into a staging folder beside it and verify every
    checksum and the schema revision; refuse non-empty target databases; restore the databases;
    move the home into place; rewrite paths (:func:`rollguard.home.relocate_home`). Nothing is
    written to the home or a database before every check passed.

    Raises:
        BackupError: see the checks above (one line each, naming the file, database or check).
    """
    started = time.monotonic()
    archive, home = archive.absolute(), target.home
    if not archive.is_file():
        raise BackupError(f"{archive}: no such archive")
    _refuse_nonempty_home(home)
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rollguard-restore-", dir=home.parent) as tmp:
        staging = Path(tmp)
        manifest = _extract(archive, staging)
        original = Path(manifest["home"])
        if original != home and (home.is_relative_to(original) or original.is_relative_to(home)):
            raise BackupError(
                f"{archive}: it was taken of home {original}; restoring it into {home} (one lies "
                "inside the other) cannot rewrite its paths safely: choose a folder beside it"
            )
        _check_revision(manifest, staging, archive)
        plan = _plan_databases(manifest, target, archive)
        for role, url in plan.items():
            _refuse_nonempty_database(role, url)
        for role, url in plan.items():
            _restore_database(role, url, staging / manifest["databases"][role]["member"])
        (staging / "home" / MARKER).unlink(missing_ok=True)
        _place_home(staging / "home", home)
    if original != home:
        rows = relocate_home(target, original).rows
    else:
        write_marker(home)
        rows = {}
    return RestoreResult(
        home=home,
        databases={r: make_url(u).render_as_string(hide_password=True) for r, u in plan.items()},
        rewritten_rows=rows,
        seconds=round(time.monotonic() - started, 3),
        schema_revision=manifest.get("schema_revision"),
    )
