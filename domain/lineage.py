"""Result lineage: which accepted batches each derived result was computed from, and which results
a late or corrected week made stale (``docs/design.md``, "Late data").

Every derived result is computed from the accepted batches of the ISO weeks before some date
(its *window*):

- a feature snapshot at cutoff ``C`` reads the weeks before ``C``, and, when its label is filled,
  the weeks of the label horizon (before ``C + horizon``);
- the batch predictions of a version at ``C`` score that snapshot: the weeks before ``C``;
- the week's drift rows compare the rows at ``C`` (and older reference cutoffs): before ``C``;
- the week's realized quality and KPI rows join the predictions with the matured label: before
  ``C + horizon``.

Each writer records the sorted batch ids of its window (:func:`record`). When the ledger's accepted
batches in a window no longer equal the recorded ones, the result is stale (:func:`stale_results`):
a week that was missing or quarantined arrived late. ``pipeline.backfill`` rebuilds stale results;
readers that may fall back to the warehouse (:func:`domain.snapshots.read_snapshot`) never trust a
stale file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rollguard.db.models import IngestionDecision, ResultLineage
from rollguard.weeks import parse_iso_week

#: Result kinds, in the order a rebuild must run (each reads the one before it).
SNAPSHOT, PREDICTIONS, DRIFT, OUTCOMES = "snapshot", "predictions", "drift", "outcomes"
KINDS: tuple[str, ...] = (SNAPSHOT, PREDICTIONS, DRIFT, OUTCOMES)


def window_end(cutoff: date, horizon_days: int, *, labelled: bool) -> date:
    """The exclusive end of a result's window: ``cutoff``, or ``cutoff + horizon_days`` when the
    result reads the label (a label known at once adds nothing)."""
    return cutoff + timedelta(days=horizon_days) if labelled else cutoff


def window_batches(batches: Sequence[IngestionDecision], until: date) -> list[str]:
    """Sorted batch ids of the accepted ``batches`` whose ISO week starts before ``until``."""
    return sorted(
        b.batch_id
        for b in batches
        if b.status == "accepted" and b.week and parse_iso_week(b.week) < until
    )


def record(
    engine: Engine,
    *,
    kind: str,
    cutoff: date,
    until: date,
    batch_ids: Sequence[str],
    model_name: str = "",
    model_version: str = "",
    n_rows: int | None = None,
) -> None:
    """Write (or overwrite) the lineage row of one result; a rewrite with a different batch set
    counts as a recomputation.

    Raises:
        ValueError: ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in KINDS:
        raise ValueError(f"lineage kind must be one of {KINDS}, not {kind!r}")
    ids = json.dumps(sorted(batch_ids))
    key = (kind, model_name, cutoff.isoformat(), str(model_version))
    for attempt in range(2):  # a concurrent first write wins the insert; the loser updates it
        try:
            with Session(engine) as session, session.begin():
                row = session.scalars(_where(select(ResultLineage), *key)).first()
                now = datetime.now(UTC)
                if row is None:
                    session.add(
                        ResultLineage(
                            kind=kind,
                            model_name=model_name,
                            cutoff=key[2],
                            model_version=key[3],
                            until=until.isoformat(),
                            batch_ids=ids,
                            n_rows=n_rows,
                            recomputed=0,
                            computed_at=now,
                        )
                    )
                else:
                    row.recomputed += int(row.batch_ids != ids)
                    row.until, row.batch_ids, row.n_rows = until.isoformat(), ids, n_rows
                    row.computed_at = now
            return
        except IntegrityError:
            if attempt:
                raise


def _where(query, kind: str, model_name: str, cutoff: str, version: str):  # type: ignore[no-untyped-def]
    return query.where(
        ResultLineage.kind == kind,
        ResultLineage.model_name == model_name,
        ResultLineage.cutoff == cutoff,
        ResultLineage.model_version == version,
    )


def recorded(
    engine: Engine, kind: str, cutoff: date, *, model_name: str = "", model_version: str = ""
) -> list[str] | None:
    """The batch ids recorded for one result, or None when it has no lineage row."""
    row = _row(engine, kind, cutoff, model_name, model_version)
    return None if row is None else list(json.loads(row.batch_ids))


def is_fresh(
    engine: Engine,
    batches: Sequence[IngestionDecision],
    kind: str,
    cutoff: date,
    *,
    model_name: str = "",
    model_version: str = "",
) -> bool:
    """Whether one result has lineage and its window's accepted ``batches`` are still the ones it
    was computed from (False for a result without lineage: nothing vouches for it)."""
    row = _row(engine, kind, cutoff, model_name, model_version)
    if row is None:
        return False
    until = date.fromisoformat(row.until)
    return window_batches(batches, until) == json.loads(row.batch_ids)


def _row(
    engine: Engine, kind: str, cutoff: date, model_name: str, model_version: str
) -> ResultLineage | None:
    with Session(engine, expire_on_commit=False) as session:
        row = session.scalars(
            _where(select(ResultLineage), kind, model_name, cutoff.isoformat(), model_version)
        ).first()
        if row is not None:
            session.expunge(row)
        return row


@dataclass(frozen=True)
class Stale:
    """A result whose window gained (or lost) accepted batches since it was computed.

    ``added`` holds the ISO weeks of batches accepted since, ``removed`` the batch ids no longer
    accepted; ``cutoff`` and ``until`` as in :class:`rollguard.db.models.ResultLineage`.
    """

    kind: str
    cutoff: date
    model_name: str
    model_version: str
    until: date
    added: tuple[str, ...] = field(default=())
    removed: tuple[str, ...] = field(default=())

    @property
    def reason(self) -> str:
        """Why it is stale, in words: ``week 1997-W07 accepted after it was computed``."""
        parts = []
        if self.added:
            weeks = ", ".join(self.added[:5]) + (" ..." if len(self.added) > 5 else "")
            parts.append(
                f"week{'s' if len(self.added) > 1 else ''} {weeks} accepted after it was computed"
            )
        if self.removed:
            parts.append(f"batch {', '.join(self.removed[:3])} no longer accepted")
        return "; ".join(parts)


def stale_results(
    engine: Engine,
    batches: Sequence[IngestionDecision],
    *,
    model_name: str,
    cutoff: date | None = None,
) -> list[Stale]:
    """Results of ``model_name`` (and the model-independent snapshots) whose recorded batches
    differ from the accepted ``batches`` of their window, oldest cutoff first, in
    :data:`KINDS` order within a cutoff; only those at ``cutoff`` when given."""
    week_of = {b.batch_id: b.week or "" for b in batches}
    query = select(ResultLineage).where(ResultLineage.model_name.in_(["", model_name]))
    if cutoff is not None:
        query = query.where(ResultLineage.cutoff == cutoff.isoformat())
    with Session(engine) as session:
        rows = session.scalars(query).all()
        out = []
        for row in rows:
            until = date.fromisoformat(row.until)
            have, now = set(json.loads(row.batch_ids)), set(window_batches(batches, until))
            if have == now:
                continue
            out.append(
                Stale(
                    kind=row.kind,
                    cutoff=date.fromisoformat(row.cutoff),
                    model_name=row.model_name,
                    model_version=row.model_version,
                    until=until,
                    added=tuple(sorted(week_of[b] for b in now - have)),
                    removed=tuple(sorted(have - now)),
                )
            )
    return sorted(out, key=lambda s: (s.cutoff, KINDS.index(s.kind), s.model_version))
