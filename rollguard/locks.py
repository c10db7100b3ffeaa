"""Locks that several processes (and hosts) sharing one monitoring store take to do something once.

One context manager, :func:`store_lock`, with two backends chosen by the store's URL:

* **PostgreSQL**: a session-level advisory lock (``pg_advisory_lock(bigint)``) on a dedicated
  connection in autocommit mode, so that no transaction stays open while the lock is held. The
  server releases it when that session ends, so a holder killed with SIGKILL (or whose host
  vanishes, once TCP notices) leaves no stale lock. Works across hosts.
* **SQLite** (the embedded default; every process on one machine): an exclusive ``flock`` on a file
  in the folder ``<store file>.locks/`` beside the store, through the ``filelock`` library with its
  soft (marker-file) fallback turned off; the kernel releases the lock when its holder dies.

Used by training (:func:`pipeline.retrain.retrain`): at most one version per training key.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import filelock
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from rollguard.db import normalize_url
from rollguard.errors import ConfigurationError, RollguardError

#: SQLSTATE of ``lock_not_available``: PostgreSQL's ``lock_timeout`` expired.
_PG_LOCK_NOT_AVAILABLE = "55P03"
#: Seconds between two attempts on a contended lock file.
_FILE_POLL_SECONDS = 0.1


class LockTimeoutError(RollguardError):
    """Another process held the lock for longer than the caller was willing to wait.

    Attributes:
        description: what the lock protects, in words (e.g. ``training of key … of model …``).
        waited_seconds: how long this process waited.
        holder: what is known of the holder (pid, host, since when), or None.
    """

    kind = "lock_timeout"

    def __init__(self, description: str, waited_seconds: float, holder: dict | None) -> None:
        self.description = description
        self.waited_seconds = waited_seconds
        self.holder = holder
        if holder and holder.get("since"):
            held = (datetime.now(UTC) - datetime.fromisoformat(holder["since"])).total_seconds()
            who = (
                f"another {description} has held the lock for {held:.0f} s "
                f"(pid {holder.get('pid')} on {holder.get('host')})"
            )
        else:
            who = f"another {description} has held the lock for at least {waited_seconds:.0f} s"
        super().__init__(
            f"{who}; gave up after waiting {waited_seconds:.0f} s. If that process is stuck, stop "
            "it (a dead holder releases the lock by itself), or allow a longer wait"
        )


def lock_id(name: Sequence[str]) -> int:
    """The stable signed 64-bit id of the lock called ``name`` (e.g. ``("training", model, key)``).

    The first 8 bytes, read as a big-endian two's-complement integer, of the SHA-256 of the UTF-8
    JSON array of the parts without spaces (``["training","<model name>","3f…"]``). Equal
    names give equal ids in every process, Python version and host; the JSON array keeps
    ``("a,b", "c")`` and ``("a", "b,c")`` apart.
    """
    payload = json.dumps(list(name), separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(payload.encode("utf-8")).digest()[:8], "big", signed=True)


@contextmanager
def store_lock(
    store_url: str, name: Sequence[str], *, timeout_seconds: float, description: str
) -> Iterator[None]:
    """Hold the exclusive lock ``name`` on the store at ``store_url`` for the ``with`` block.

    Every process that takes the same ``name`` on the same store waits for the current holder; the
    lock is released when the block ends, or when the holder dies (no stale lock after a crash or
    ``kill -9``). The key is :func:`lock_id` of ``name``: the argument of ``pg_advisory_lock`` on
    PostgreSQL; the file ``<store file>.locks/<id as 16 hex digits>.lock`` on SQLite (while held
    it holds the holder's pid, host and start time as JSON; it is emptied, not removed, on
    release: removing a lock file while another process waits on it would let a third one in).

    Args:
        store_url: SQLAlchemy URL of the monitoring store (``Settings.monitoring_db_url``).
        name: the lock's name parts; the first part says what it protects.
        timeout_seconds: longest wait for another holder (positive); then :class:`LockTimeoutError`.
        description: what the lock protects, for the error message.

    Raises:
        LockTimeoutError: another process held the lock for all of ``timeout_seconds``.
        ConfigurationError: the store is neither PostgreSQL nor a SQLite file.
        sqlalchemy.exc.OperationalError: the PostgreSQL server cannot be reached.
        OSError: the lock folder cannot be created, or its file system has no ``flock``.
    """
    if timeout_seconds <= 0:
        raise ValueError("timeout_seconds must be positive")
    url = make_url(normalize_url(store_url))
    key = lock_id(name)
    backend = url.get_backend_name()
    if backend == "postgresql":
        with _advisory_lock(
            url.render_as_string(hide_password=False), key, timeout_seconds, description
        ):
            yield
    elif backend == "sqlite" and url.database and url.database != ":memory:":
        store = Path(url.database)
        path = store.parent / f"{store.name}.locks" / f"{key & 0xFFFFFFFFFFFFFFFF:016x}.lock"
        with _file_lock(path, timeout_seconds, description):
            yield
    else:
        raise ConfigurationError(
            f"cannot take the lock {name[0]!r} on the store {url.render_as_string()}: "
            "a PostgreSQL or file-backed SQLite store is needed"
        )


def _holder(since: datetime) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": since.isoformat()}


@contextmanager
def _file_lock(path: Path, timeout_seconds: float, description: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)

    def record_holder(fd: int) -> None:  # runs with the lock held, before acquire() returns
        data = json.dumps(_holder(datetime.now(UTC))).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    lock = filelock.FileLock(
        path,
        timeout=timeout_seconds,
        poll_interval=_FILE_POLL_SECONDS,
        fallback_to_soft=False,  # a marker file would outlive a killed holder
        on_acquired=record_holder,
    )
    started = time.monotonic()
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = None
        with suppress(OSError, ValueError):
            holder = json.loads(path.read_text())
        raise LockTimeoutError(description, time.monotonic() - started, holder) from None
    try:
        yield
    finally:
        with suppress(OSError):
            path.write_bytes(b"")  # no stale holder in the file once it is released
        lock.release()


@contextmanager
def _advisory_lock(url: str, key: int, timeout_seconds: float, description: str) -> Iterator[None]:
    holder = _holder(datetime.now(UTC))
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    started = time.monotonic()
    try:
        with engine.connect() as conn:
            _set(conn, "application_name", _application_name(holder))
            _set(conn, "lock_timeout", f"{max(1, round(timeout_seconds * 1000))}ms")
            try:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != _PG_LOCK_NOT_AVAILABLE:
                    raise
                waited = time.monotonic() - started
                raise LockTimeoutError(description, waited, _pg_holder(conn, key)) from None
            _set(conn, "application_name", _application_name(_holder(datetime.now(UTC))))
            try:
                yield
            finally:
                # Closing the session releases the lock too; a broken connection has lost it.
                with suppress(DBAPIError):
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def _set(conn: Connection, setting: str, value: str) -> None:
    conn.execute(text("SELECT set_config(:name, :value, false)"), {"name": setting, "value": value})


def _application_name(holder: dict) -> str:
    """``rollguard-lock pid=<pid> since=<UTC time> host=<host>``, cut to PostgreSQL's 63 bytes."""
    since = datetime.fromisoformat(holder["since"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"rollguard-lock pid={holder['pid']} since={since} host={holder['host']}"[:63]


def _pg_holder(conn: Connection, key: int) -> dict | None:
    """The holder of advisory lock ``key`` in this database, from its ``application_name``."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    name = conn.execute(
        text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = :hi AND l.objid::bigint = :lo AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
    ).scalar()
    if not name or not name.startswith("rollguard-lock "):
        return None
    fields = dict(part.split("=", 1) for part in name.split()[1:] if "=" in part)
    since = fields.get("since")
    return {
        "pid": fields.get("pid"),
        "host": fields.get("host"),
        "since": datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).isoformat()
        if since
        else None,
    }
