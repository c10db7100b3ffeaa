"""The prediction log: every scored row reaches the monitoring store's ``prediction_log`` table,
written in batches by a background thread, off the request path.

Path of a row: the request hands its rows to :meth:`PredictionLog.submit` (an O(1) append to a
bounded in-memory queue, counted in rows). The writer thread takes up to ``batch_rows`` rows at a
time and inserts them with "on conflict do nothing" on ``(request_id, row_index)``.

Nothing is lost when the store is down: a batch that cannot be inserted is appended to the spool
file ``<home>/spool/predictions.jsonl`` (JSON lines, flushed and ``fsync``-ed before the writer
moves on); the same happens, on the request thread, when the in-memory queue is full. While spool
files exist, the writer tries to replay them every ``retry_seconds``: the active file is renamed to
``replay-<ns>.jsonl`` (so appends go to a fresh file), inserted in chunks, and deleted once every
chunk is in. Replay is idempotent (the unique key), so a crash mid-replay only means the file is
replayed again. Rows are dropped (and counted) only when the spool file itself cannot be written.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydantic_core
from sqlalchemy import Engine

from api.metrics import ServingMetrics
from api.model import ServingModel
from rollguard.db.models import PredictionLogRow

log = logging.getLogger("rollguard.api.predlog")

SPOOL_FILE = "predictions.jsonl"
_TABLE = PredictionLogRow.__table__


@dataclass(frozen=True)
class LoggedRequest:
    """One answered request: ``rows`` (feature dicts) and ``scores`` (shape (n_rows,)), all by
    ``model_version``; ``entity_ids`` (the use case's ``entity_column`` values) is set for the
    known-entity route; ``key_id`` is the public id of the API key that asked (None when keys
    are off)."""

    request_id: str
    predicted_at: datetime
    model_name: str
    model_version: str
    rows: list[dict[str, Any]]
    scores: np.ndarray
    entity_ids: tuple[int, ...] | None = None
    key_id: str | None = None

    def __len__(self) -> int:
        return len(self.rows)


def to_records(req: LoggedRequest, challenger: ServingModel | None = None) -> list[dict[str, Any]]:
    """Table rows of one request (one per feature row), with shadow scores when ``challenger``
    is given and differs from the version that answered. ``features`` is the row as a JSON
    object (pydantic-core's serializer: about 5x faster than ``json.dumps`` for these rows);
    ``predicted_at`` is a datetime (an ISO 8601 string in the spool file)."""
    shadow: list[float | None] = [None] * len(req.rows)
    shadow_version = None
    if challenger is not None and challenger.version != req.model_version:
        try:
            shadow = challenger.predict(challenger.to_matrix(req.rows)).tolist()
            shadow_version = challenger.version
        except Exception as exc:  # noqa: BLE001 - shadow scoring never affects the log
            log.warning("shadow scoring failed: %s", exc)
    at = req.predicted_at
    to_json = pydantic_core.to_json
    return [
        {
            "request_id": req.request_id,
            "row_index": i,
            "predicted_at": at,
            "model_name": req.model_name,
            "model_version": req.model_version,
            "entity_id": req.entity_ids[i] if req.entity_ids else None,
            "features": to_json(row).decode(),
            "score": score,
            "challenger_version": shadow_version if shadow[i] is not None else None,
            "challenger_score": shadow[i],
            "key_id": req.key_id,
        }
        for i, (row, score) in enumerate(zip(req.rows, req.scores.tolist(), strict=True))
    ]


_COLUMNS = (
    "request_id",
    "row_index",
    "predicted_at",
    "model_name",
    "model_version",
    "entity_id",
    "features",
    "score",
    "challenger_version",
    "challenger_score",
    "key_id",
)


class _Insert:
    """The prediction-log insert ("on conflict do nothing" on ``(request_id, row_index)``),
    compiled once for one engine's dialect, with the bind processors SQLAlchemy applies to each
    column (so stored values are exactly those of an ORM write). Executed as one DBAPI
    ``executemany`` of plain parameter tuples/dicts: several times less Python per row than
    ``Connection.execute(insert, list_of_dicts)``, which matters because the writer thread shares
    the GIL with the request path."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(_TABLE).on_conflict_do_nothing(index_elements=["request_id", "row_index"])
        compiled = stmt.compile(dialect=dialect, column_keys=list(_COLUMNS))
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.order = tuple(compiled.positiontup or ()) if self.positional else _COLUMNS
        if set(self.order) != set(_COLUMNS):
            raise RuntimeError(f"unexpected insert parameters {self.order}")
        procs = {c: _TABLE.c[c].type._cached_bind_processor(dialect) for c in _COLUMNS}
        self._at = self.order.index("predicted_at")
        self._at_proc = procs["predicted_at"]
        self._procs = tuple(
            (i, procs[c]) for i, c in enumerate(self.order) if procs[c] and c != "predicted_at"
        )
        self._get = operator.itemgetter(*self.order)

    def params(self, records: list[dict[str, Any]]) -> list[Any]:
        """DBAPI parameters of ``records`` (``predicted_at`` as a datetime or ISO string)."""
        at_i, at_proc, procs, get = self._at, self._at_proc, self._procs, self._get
        cache: dict[Any, Any] = {}
        out: list[Any] = []
        for r in records:
            values = list(get(r))
            at = values[at_i]
            if at not in cache:  # one timestamp per request: convert (and process) it once
                when = datetime.fromisoformat(at) if isinstance(at, str) else at
                cache[at] = at_proc(when) if at_proc is not None else when
            values[at_i] = cache[at]
            for i, proc in procs:
                if values[i] is not None:
                    values[i] = proc(values[i])
            out.append(
                tuple(values) if self.positional else dict(zip(self.order, values, strict=True))
            )
        return out


_INSERTS: weakref.WeakKeyDictionary[Engine, _Insert] = weakref.WeakKeyDictionary()


def insert_records(engine: Engine, records: list[dict[str, Any]]) -> None:
    """Insert prediction-log records, ignoring ones whose ``(request_id, row_index)`` is already
    stored (this is what makes spool replay idempotent). The one function that writes the table.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the store failed; nothing of this call is committed.
    """
    if not records:
        return
    insert = _INSERTS.get(engine)
    if insert is None:
        insert = _INSERTS[engine] = _Insert(engine)
    params = insert.params(records)
    with engine.begin() as conn:
        conn.exec_driver_sql(insert.sql, params)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class PredictionLog:
    """Bounded queue + writer thread + spool (see the module docstring).

    Args:
        engine_factory: returns an engine on the migrated store; called again after a failure.
        spool_dir: folder of the spool files (created on first use).
        metrics: queue gauge and spooled/dropped/written counters.
        max_queue_rows: rows held in memory before requests spill straight to the spool.
        batch_rows: most rows per insert.
        flush_seconds: longest wait before a partial batch is written.
        retry_seconds: seconds between attempts to reach a failed store / replay the spool.
        challenger: returns the model to shadow-score with, or None.
    """

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        spool_dir: Path,
        metrics: ServingMetrics,
        *,
        max_queue_rows: int = 200_000,
        batch_rows: int = 5_000,
        flush_seconds: float = 0.02,
        retry_seconds: float = 1.0,
        challenger: Callable[[], ServingModel | None] = lambda: None,
    ) -> None:
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self.spool_dir = spool_dir
        self.metrics = metrics
        self.max_queue_rows = max_queue_rows
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.retry_seconds = retry_seconds
        self._challenger = challenger
        self._queue: deque[LoggedRequest] = deque()
        self._queued_rows = 0
        self._busy = False
        self._cond = threading.Condition()
        self._spool_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.store_ok: bool | None = None
        self.store_error: str | None = None
        self._next_try = 0.0
        # True when a spool file may exist (at start: maybe from an earlier run), so the idle
        # writer does not list the spool folder on every wake-up.
        self._spool_pending = True

    # --- hot path ----------------------------------------------------------------------------------
    def submit(self, req: LoggedRequest) -> None:
        """Hand one answered request to the writer. O(1) unless the queue is full, in which case
        the rows go straight to the spool file (never dropped silently)."""
        n = len(req)
        with self._cond:
            if self._queued_rows + n <= self.max_queue_rows:
                self._queue.append(req)
                self._queued_rows += n
                self.metrics.log_queue_rows.set(self._queued_rows)
                return
        self._spool(to_records(req))

    # --- spool -------------------------------------------------------------------------------------
    def _spool(self, records: list[dict[str, Any]]) -> None:
        """Append records to the spool file, flushed and fsync-ed."""
        if not records:
            return
        data = "".join(
            json.dumps(r, separators=(",", ":"), default=_json_default) + "\n" for r in records
        ).encode()
        try:
            with self._spool_lock:
                self.spool_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(
                    self.spool_dir / SPOOL_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
                )
                try:
                    view = memoryview(data)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            self.metrics.log_dropped_rows.inc(len(records))
            log.error("prediction log: %d rows lost, spool not writable: %s", len(records), exc)
            return
        self._spool_pending = True
        self.metrics.log_spooled_rows.inc(len(records))

    def spool_files(self) -> list[Path]:
        """Spool files waiting for replay, oldest first (the active file last)."""
        if not self.spool_dir.is_dir():
            return []
        files = sorted(self.spool_dir.glob("replay-*.jsonl"))
        active = self.spool_dir / SPOOL_FILE
        return files + ([active] if active.exists() else [])

    def spooled_rows(self) -> int:
        """Rows in spool files (a line count; for status and tests)."""
        total = 0
        for path in self.spool_files():
            with path.open("rb") as fh:
                total += sum(1 for _ in fh)
        return total

    def _replay(self, engine: Engine) -> None:
        """Insert every spool file's rows, deleting each file once all of it is stored.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the store failed (the file stays for the next try).
        """
        active = self.spool_dir / SPOOL_FILE
        with self._spool_lock:
            if active.exists():
                active.rename(self.spool_dir / f"replay-{time.time_ns():020d}.jsonl")
        for path in sorted(self.spool_dir.glob("replay-*.jsonl")):
            for chunk in _read_chunks(path, self.batch_rows):
                insert_records(engine, chunk)
                self.metrics.log_written_rows.inc(len(chunk))
            path.unlink()
            log.info("prediction log: replayed spool file %s", path.name)

    # --- writer ------------------------------------------------------------------------------------
    def _engine_or_none(self) -> Engine | None:
        if self._engine is None:
            try:
                self._engine = self._engine_factory()
            except Exception as exc:  # noqa: BLE001 - store not reachable or not migrated
                self._store_failed(exc)
                return None
        return self._engine

    def _store_failed(self, exc: BaseException) -> None:
        if self.store_ok is not False:
            log.warning("prediction log: store unavailable, spooling: %s", exc)
        self.store_ok = False
        self.store_error = (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        )
        self._next_try = time.monotonic() + self.retry_seconds
        if self._engine is not None:  # reconnect through the factory next time
            self._engine.dispose()
            self._engine = None

    def _take(self) -> list[LoggedRequest]:
        # Linger: requests are not notified one by one; the writer wakes every flush_seconds
        # (or at stop) and takes what accumulated, so a transaction carries many rows. Short
        # waits keep each burst of writer work short: at 8 connections, 0.02 s instead of 0.2 s
        # took the p99 latency from about 15 ms to about 8.5 ms (benchmarks/bench_api.py).
        if not self._stop.is_set() and self._queued_rows < self.batch_rows:
            self._stop.wait(self.flush_seconds)
        with self._cond:
            taken, rows = [], 0
            while self._queue and rows < self.batch_rows:
                req = self._queue.popleft()
                taken.append(req)
                rows += len(req)
            self._queued_rows -= rows
            self._busy = bool(taken)
            self.metrics.log_queue_rows.set(self._queued_rows)
            return taken

    def _write(self, taken: list[LoggedRequest]) -> None:
        challenger = self._challenger()
        records = [r for req in taken for r in to_records(req, challenger)]
        engine = None if time.monotonic() < self._next_try else self._engine_or_none()
        if engine is None:
            self._spool(records)
            return
        try:
            insert_records(engine, records)
        except Exception as exc:  # noqa: BLE001 - any store failure: spool, retry later
            self._store_failed(exc)
            self._spool(records)
            return
        self.store_ok, self.store_error = True, None
        self.metrics.log_written_rows.inc(len(records))

    def _maybe_replay(self) -> None:
        if not self._spool_pending or time.monotonic() < self._next_try:
            return
        # Cleared before listing: a spool write racing with this check sets it again.
        self._spool_pending = False
        if not self.spool_files():
            return
        engine = self._engine_or_none()
        if engine is None:
            self._spool_pending = True
            return
        try:
            self._replay(engine)
        except Exception as exc:  # noqa: BLE001
            self._spool_pending = True
            self._store_failed(exc)
            return
        self.store_ok, self.store_error = True, None

    def _run(self) -> None:
        # Open (and on SQLite, migrate) the store now, while the model loads, rather than on
        # the first batch of predictions; a store that is down is retried as usual.
        try:
            self._engine_or_none()
        except Exception:  # noqa: BLE001 - the writer must never die
            log.exception("prediction log: opening the store failed")
        while True:
            stopping = self._stop.is_set()
            taken = self._take()
            try:
                if taken:
                    self._write(taken)
                self._maybe_replay()
            except Exception:  # noqa: BLE001 - the writer must never die
                log.exception("prediction log writer iteration failed")
            finally:
                with self._cond:
                    self._busy = False
            if stopping and not self._queue:
                return

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rollguard-predlog", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write (or spool) everything queued, then stop the writer."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        # Whatever is still queued (writer stuck past the timeout) goes to the spool.
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        for req in left:
            self._spool(to_records(req))
        if self._engine is not None:
            self._engine.dispose()

    def idle(self) -> bool:
        """True when nothing is queued, being written, or waiting in a spool file."""
        with self._cond:
            busy = bool(self._queue) or self._busy
        return not busy and not self.spool_files()

    def status(self) -> dict[str, Any]:
        """Prediction-log health for ``/readyz``."""
        return {
            "store_reachable": self.store_ok,
            "store_error": self.store_error,
            "queued_rows": self._queued_rows,
            "spool_files": len(self.spool_files()),
        }


def adopt_shared_spool(shared_dir: Path, spool_dir: Path) -> Path | None:
    """Move the spool file of a release that shared one spool between replicas
    (``<shared_dir>/predictions.jsonl``) into this replica's ``spool_dir`` as a file to replay.
    Atomic: when several replicas start at once, exactly one adopts it. The adopted path, or
    None when there was nothing to adopt."""
    legacy = shared_dir / SPOOL_FILE
    if not legacy.is_file():
        return None
    spool_dir.mkdir(parents=True, exist_ok=True)
    target = spool_dir / f"replay-{time.time_ns():020d}.jsonl"
    try:
        legacy.rename(target)
    except FileNotFoundError:  # another replica adopted it first
        return None
    return target


def _read_chunks(path: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    with path.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # Only a crash in the middle of an append leaves a torn (last) line.
                log.error("prediction log: skipping torn line %d of %s", n, path.name)
                continue
            if "customer_id" in record:  # spooled before migration 0006 renamed the key
                record["entity_id"] = record.pop("customer_id")
            record.setdefault("key_id", None)  # spooled before migration 0008 added it
            chunk.append(record)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
