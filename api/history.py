"""Read-only history for the UI: a customer's purchases (the warehouse batches named by the
ingestion ledger) and the recent moves of the ``champion`` alias with their reasons
(``alias_audit``). Both read the monitoring store; neither writes anything."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollguard.db.models import AliasAudit


class StoreUnavailable(Exception):
    """The monitoring store could not be read (down, or at an older schema revision)."""


class NoPurchases(Exception):
    """The customer has no purchase in the ingested warehouse."""


@dataclass(frozen=True)
class Purchase:
    """One accepted purchase: day (YYYY-MM-DD), CDs bought, USD spent."""

    transaction_id: int
    date: str
    number_of_cds: int
    dollar_value: float


@dataclass(frozen=True)
class CustomerHistory:
    """A customer's purchases, newest first (at most ``limit`` of them), with totals over all."""

    customer_id: int
    n_purchases: int
    total_cds: int
    total_dollars: float
    first_purchase: str
    last_purchase: str
    purchases: list[Purchase]


class PurchaseHistory:
    """All accepted purchases, sorted by customer and date, cached until the ledger's set of
    accepted batches changes (one indexed ledger query per lookup)."""

    def __init__(self, engine: Callable[[], Engine], settings: Any) -> None:
        self._engine = engine
        self._settings = settings
        self._lock = threading.Lock()
        self._key: tuple[str, ...] | None = None
        self._frame: pd.DataFrame | None = None
        self._ids: np.ndarray = np.empty(0, dtype=np.int64)

    def _load(self) -> tuple[pd.DataFrame, np.ndarray]:
        from domain.warehouse import accepted_batches

        try:
            batches = accepted_batches(self._settings, engine=self._engine())
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure is "unavailable" here
            raise StoreUnavailable(f"the monitoring store cannot be read: {exc}") from exc
        key = tuple(f"{b.batch_id}:{b.warehouse_path}" for b in batches)
        with self._lock:
            if key != self._key or self._frame is None:
                columns = ["transaction_id", "customer_id", "date", "number_of_cds", "dollar_value"]
                frames = [pd.read_parquet(b.warehouse_path, columns=columns) for b in batches]
                frame = (
                    pd.concat(frames, ignore_index=True)
                    if frames
                    else pd.DataFrame({c: pd.Series(dtype="int64") for c in columns})
                )
                frame = frame.sort_values(
                    ["customer_id", "date", "transaction_id"], kind="stable"
                ).reset_index(drop=True)
                self._frame = frame
                self._ids = frame["customer_id"].to_numpy(np.int64)
                self._key = key
            return self._frame, self._ids

    def lookup(self, customer_id: int, limit: int) -> CustomerHistory:
        """The customer's purchases, newest first, at most ``limit``; totals cover all of them.

        Raises:
            StoreUnavailable: the ledger cannot be read.
            NoPurchases: the customer has no accepted purchase.
        """
        frame, ids = self._load()
        lo, hi = (
            np.searchsorted(ids, customer_id, "left"),
            np.searchsorted(ids, customer_id, "right"),
        )
        if lo == hi:
            raise NoPurchases(f"customer {customer_id} has no purchase in the ingested warehouse")
        rows = frame.iloc[lo:hi]
        newest = rows.iloc[::-1].head(limit)
        return CustomerHistory(
            customer_id=int(customer_id),
            n_purchases=len(rows),
            total_cds=int(rows["number_of_cds"].sum()),
            total_dollars=round(float(rows["dollar_value"].sum()), 2),
            first_purchase=pd.Timestamp(rows["date"].iloc[0]).date().isoformat(),
            last_purchase=pd.Timestamp(rows["date"].iloc[-1]).date().isoformat(),
            purchases=[
                Purchase(
                    transaction_id=int(r.transaction_id),
                    date=pd.Timestamp(r.date).date().isoformat(),
                    number_of_cds=int(r.number_of_cds),
                    dollar_value=float(r.dollar_value),
                )
                for r in newest.itertuples(index=False)
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
