"""Read-only history for the UI: an entity's raw records (the warehouse batches named by the
ingestion ledger; columns of the use case's record schema) and the recent moves of the
``champion`` alias with their reasons (``alias_audit``). Both read the monitoring store; neither
writes anything."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from api.parquet import read_parquet
from domain.warehouse import accepted_batches
from rollguard.db.models import AliasAudit
from rollguard.usecase import UseCase


class StoreUnavailable(Exception):
    """The monitoring store could not be read (down, or at an older schema revision)."""


class NoRecords(Exception):
    """The entity has no record in the ingested warehouse."""


@dataclass(frozen=True)
class EntityHistory:
    """An entity's records, newest first (at most ``limit`` of them), with totals over all.

    Attributes:
        entity_id: the key (the use case's ``entity_column``).
        n_records: all accepted records of the entity.
        first, last: dates (YYYY-MM-DD) of its oldest and newest record.
        totals: sum over all records of each numeric record column that is not a key or the time.
        records: the newest ``limit`` records as JSON-ready dicts (record schema columns).
    """

    entity_id: int
    n_records: int
    first: str
    last: str
    totals: dict[str, float]
    records: list[dict[str, Any]]


def _json_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        stamp = pd.Timestamp(value)
        return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


class RecordHistory:
    """All accepted records, sorted by entity and time, cached until the ledger's set of accepted
    batches changes (one indexed ledger query per lookup).

    Args:
        engine: opens the monitoring store (raises :class:`StoreUnavailable`).
        settings: the settings the warehouse reads need.
        usecase: gives the record columns, the entity key, the record id and the time column;
            its ``entity_column`` must be a record column (:meth:`supported`).
    """

    def __init__(self, engine: Callable[[], Engine], settings: Any, usecase: UseCase) -> None:
        self._engine = engine
        self._settings = settings
        self.usecase = usecase
        self._lock = threading.Lock()
        self._key: tuple[str, ...] | None = None
        self._frame: pd.DataFrame | None = None
        self._ids: np.ndarray = np.empty(0, dtype=np.int64)

    @staticmethod
    def supported(usecase: UseCase) -> bool:
        """Whether the use case's raw records carry its entity key (else there is no route)."""
        return usecase.entity_column in usecase.record_columns

    def total_columns(self) -> list[str]:
        """Numeric record columns summed in :attr:`EntityHistory.totals`."""
        uc = self.usecase
        keys = {uc.entity_column, uc.record_id_column, uc.record_time_column}
        schema = uc.record_schema.columns
        return [
            c
            for c in uc.record_columns
            if c not in keys and str(schema[c].dtype).startswith(("int", "float"))
        ]

    def _load(self) -> tuple[pd.DataFrame, np.ndarray]:
        try:
            batches = accepted_batches(self._settings, engine=self._engine())
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure is "unavailable" here
            raise StoreUnavailable(f"the monitoring store cannot be read: {exc}") from exc
        key = tuple(f"{b.batch_id}:{b.warehouse_path}" for b in batches)
        uc = self.usecase
        with self._lock:
            if key != self._key or self._frame is None:
                columns = list(uc.record_columns)
                frames = [read_parquet(b.warehouse_path, columns) for b in batches]
                frame = (
                    pd.concat(frames, ignore_index=True)
                    if frames
                    else pd.DataFrame({c: pd.Series(dtype="int64") for c in columns})
                )
                order = [uc.entity_column, uc.record_time_column, uc.record_id_column]
                frame = frame.sort_values(list(dict.fromkeys(order)), kind="stable")
                self._frame = frame.reset_index(drop=True)
                self._ids = self._frame[uc.entity_column].to_numpy(np.int64)
                self._key = key
            return self._frame, self._ids

    def lookup(self, entity_id: int, limit: int) -> EntityHistory:
        """The entity's records, newest first, at most ``limit``; totals cover all of them.

        Raises:
            StoreUnavailable: the ledger cannot be read.
            NoRecords: the entity has no accepted record.
        """
        frame, ids = self._load()
        lo, hi = (
            np.searchsorted(ids, entity_id, "left"),
            np.searchsorted(ids, entity_id, "right"),
        )
        uc = self.usecase
        if lo == hi:
            empty = (
                ": nothing has been ingested yet (run `rollguard data replay` and "
                "`rollguard data ingest`, or let the weekly DAG run)"
                if len(ids) == 0
                else ""
            )
            raise NoRecords(
                f"{uc.entity_column} {entity_id} has no record in the ingested warehouse{empty}"
            )
        rows = frame.iloc[lo:hi]
        newest = rows.iloc[::-1].head(limit)
        times = rows[uc.record_time_column]
        return EntityHistory(
            entity_id=int(entity_id),
            n_records=len(rows),
            first=pd.Timestamp(times.iloc[0]).date().isoformat(),
            last=pd.Timestamp(times.iloc[-1]).date().isoformat(),
            totals={c: round(float(rows[c].sum()), 2) for c in self.total_columns()},
            records=[
                {c: _json_value(v) for c, v in record.items()}
                for record in newest.to_dict("records")
            ],
        )


@dataclass(frozen=True)
class AliasMove:
    """One attempt to move the ``champion`` alias (a row of ``alias_audit``)."""

    moved_at: str
    action: str
    outcome: str
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    evidence: dict[str, Any]


def _evidence(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def recent_alias_moves(engine: Engine, model_name: str, limit: int) -> list[AliasMove]:
    """The newest ``limit`` rows of ``alias_audit`` for ``model_name``, newest first (moves and
    refused attempts, each with its reason and evidence as JSON).

    Raises:
        StoreUnavailable: the store cannot be read.
    """
    try:
        with Session(engine) as session:
            rows = session.scalars(
                select(AliasAudit)
                .where(AliasAudit.model_name == model_name)
                .order_by(AliasAudit.moved_at.desc(), AliasAudit.id.desc())
                .limit(limit)
            ).all()
            return [
                AliasMove(
                    moved_at=_iso(r.moved_at),
                    action=r.action,
                    outcome=r.outcome,
                    from_version=r.from_version,
                    to_version=r.to_version,
                    actor=r.actor,
                    reason=r.reason,
                    evidence=_evidence(r.evidence),
                )
                for r in rows
            ]
    except Exception as exc:  # noqa: BLE001 - any store failure is "unavailable" here
        raise StoreUnavailable(f"the monitoring store cannot be read: {exc}") from exc


def _iso(value: datetime) -> str:
    from datetime import UTC

    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def latest_champion_move(engine: Engine, model_name: str) -> str | None:
    """The ``to_version`` of the newest ``moved`` row of ``alias_audit`` for the ``champion`` of
    ``model_name`` (newest by row id, i.e. by commit order under the champion lock, not by the
    caller-supplied ``moved_at``), or None when Rollguard never moved it.

    Raises:
        StoreUnavailable: the store cannot be read.
    """
    try:
        with Session(engine) as session:
            return session.scalars(
                select(AliasAudit.to_version)
                .where(
                    AliasAudit.model_name == model_name,
                    AliasAudit.alias == "champion",
                    AliasAudit.outcome == "moved",
                )
                .order_by(AliasAudit.id.desc())
                .limit(1)
            ).first()
    except Exception as exc:  # noqa: BLE001 - any store failure is "unavailable" here
        raise StoreUnavailable(f"the monitoring store cannot be read: {exc}") from exc
