"""Promotion, rejection and rollback: the only code that moves the MLflow alias ``champion``.

Concurrency design
------------------
The monitoring store holds one ``champion_pointer`` row per registered model; it is the source of
truth for compare-and-set (CAS). Every move:

1. locks that row — ``SELECT ... FOR UPDATE`` in a transaction on PostgreSQL, a ``BEGIN IMMEDIATE``
   transaction (one writer at a time for the whole file) on SQLite;
2. compares the pointer with the version the caller expects (the champion its gate ran against, or
   the version an alert is about) and refuses with :class:`ChampionMoved` on a difference;
3. sets the MLflow alias and the status tags *inside* the critical section, then updates the pointer
   and writes one ``alias_audit`` row in the same transaction, and commits.

A refused attempt also writes an audit row (``outcome = refused``), so a promotion racing a rollback
leaves one consistent outcome and two audit rows, never a lost update. If the alias and the pointer
ever disagree (a crash between setting the alias and committing), the next lock holder resets the
alias to the pointer before doing anything else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, insert, select, update

from domain.live_profile import (
    SCORE_REFERENCE_TAG,
    LiveProfileError,
    ScoreReference,
    score_reference,
)
from monitoring.weekly import TRAINING_MEDIAN_TAG
from registry_guard.gate import (
    ChampionUnavailable,
    GateDecision,
    ModelEvidence,
    evaluate_gate,
)
from registry_guard.measured import gate_error_rates
from registry_guard.policy import GatePolicy
from rollguard.db.models import AliasAudit, ChampionPointer, GateDecisionRow
from rollguard.errors import RollguardError
from rollguard.usecase import CUTOFF_COLUMN, LABEL_AVAILABLE_COLUMN, UseCase

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
STATUS_TAG = "rollguard.status"
DECISION_TAG = "rollguard.gate_decision"
REASONS_TAG = "rollguard.gate_reasons"
Actor = Literal["pipeline", "guard", "alert", "human"]
ACTORS: frozenset[str] = frozenset({"pipeline", "guard", "alert", "human"})
STATUSES: frozenset[str] = frozenset(
    {"candidate", "champion", "rejected", "retired", "rolled_back"}
)
#: Versions a rollback never returns to automatically.
NEVER_ROLL_BACK_TO: frozenset[str] = frozenset({"rejected", "rolled_back", "candidate"})
_TAG_LIMIT = 4000  # MLflow caps tag values at 5,000 characters


# --- errors ----------------------------------------------------------------------------------------
class RegistryError(RollguardError):
    """A registry operation cannot be done as asked."""

    kind = "registry"


class AliasTargetMissing(RegistryError):
    """The version behind an alias (or the champion pointer) does not exist in the registry."""

    def __init__(self, model: str, alias: str, version: str | None, detail: str = "") -> None:
        self.model, self.alias, self.version = model, alias, version
        super().__init__(
            f"model {model!r}: alias {alias!r} points to version {version}, which does not exist "
            f"in the registry (deleted or lost){': ' + detail if detail else ''}; roll back with "
            f"`rollguard rollback --to VERSION --reason ...` or promote another version"
        )


class VersionNotFound(RegistryError):
    """A version named by the caller does not exist."""

    def __init__(self, model: str, version: str) -> None:
        self.model, self.version = model, version
        super().__init__(f"model {model!r} has no version {version}")


class ChampionMoved(RegistryError):
    """Compare-and-set failed: the champion is not the version the caller expected."""

    def __init__(self, model: str, expected: str | None, actual: str | None) -> None:
        self.model, self.expected, self.actual = model, expected, actual
        super().__init__(
            f"model {model!r}: champion is version {actual}, not the expected {expected}; "
            f"the move was refused (re-run the gate against the current champion)"
        )


class RollbackRefused(RegistryError):
    """A rollback was refused (cooldown, or no earlier good version)."""


# --- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AliasMove:
    """One row of the alias history/audit.

    Attributes:
        outcome: ``moved`` or ``refused``. action: ``bootstrap``, ``promote`` or ``rollback``.
        replayed: True when a rollback with an already-used fingerprint returned the earlier move.
        moved_at: UTC time of the attempt.
    """

    id: int
    model_name: str
    alias: str
    action: str
    outcome: str
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    evidence: dict[str, Any]
    fingerprint: str | None
    moved_at: datetime
    replayed: bool = False


@dataclass(frozen=True)
class GateRun:
    """What :func:`run_gate` did: the decision, and the alias move it caused (if any)."""

    model_name: str
    challenger_version: str
    champion_version: str | None
    decision: GateDecision
    move: AliasMove | None
    artifacts: tuple[str, ...] = field(default=())


# --- reading the registry ----------------------------------------------------------------------------
def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return (
        code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
        or "not found" in str(exc).lower()
        or "does not exist" in str(exc).lower()
    )


def alias_version(client: Any, model_name: str, alias: str) -> str | None:
    """The version an MLflow alias points to, or None when the alias (or model) does not exist."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except Exception as exc:  # noqa: BLE001 - MlflowException without a stable subclass
        if _is_missing(exc):
            return None
        raise


def get_version(client: Any, model_name: str, version: str, *, alias: str | None = None) -> Any:
    """The ``ModelVersion`` ``version`` of ``model_name``.

    Raises:
        AliasTargetMissing: when it does not exist and was reached through ``alias``.
        VersionNotFound: when it does not exist and was named directly.
    """
    try:
        return client.get_model_version(model_name, str(version))
    except Exception as exc:  # noqa: BLE001
        if _is_missing(exc):
            if alias is not None:
                raise AliasTargetMissing(model_name, alias, str(version)) from None
            raise VersionNotFound(model_name, str(version)) from None
        raise


def resolve_alias(client: Any, model_name: str, alias: str, *, engine: Engine | None = None) -> str:
    """The version behind ``alias``, checked to exist.

    For ``champion`` the pointer in the monitoring store (when ``engine`` is given) is the truth.

    Raises:
        AliasTargetMissing: when the alias points to a version that no longer exists (or the
            pointer names a version the registry has lost).
        RegistryError: when the alias is not set.
    """
    version = None
    if alias == CHAMPION and engine is not None:
        version = read_pointer(engine, model_name)
    if version is None:
        version = alias_version(client, model_name, alias)
    if version is None:
        raise RegistryError(f"model {model_name!r} has no {alias!r} alias")
    get_version(client, model_name, version, alias=alias)
    return version


def version_status(mv: Any) -> str | None:
    """The ``rollguard.status`` tag of a ``ModelVersion`` (None when untagged)."""
    return (mv.tags or {}).get(STATUS_TAG)


def list_versions(client: Any, model_name: str) -> list[Any]:
    """Every existing version of ``model_name``, newest (highest number) first."""
    found = client.search_model_versions(f"name='{model_name}'")
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


# --- the monitoring-store side -----------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def read_pointer(engine: Engine, model_name: str) -> str | None:
    """The champion version recorded in the store (None: no champion, or never recorded)."""
    with engine.connect() as conn:
        return conn.execute(
            select(ChampionPointer.version).where(ChampionPointer.model_name == model_name)
        ).scalar_one_or_none()


def _ensure_pointer(engine: Engine, model_name: str, client: Any) -> None:
    """Create the pointer row on first use, adopting the current MLflow alias if there is one."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    with engine.connect() as conn:
        exists = conn.execute(
            select(ChampionPointer.model_name).where(ChampionPointer.model_name == model_name)
        ).first()
    if exists:
        return
    current = alias_version(client, model_name, CHAMPION)
    stmt = (
        dialect_insert(ChampionPointer)
        .values(model_name=model_name, version=current, updated_at=_now())
        .on_conflict_do_nothing(index_elements=["model_name"])
    )
    with engine.begin() as conn:
        conn.execute(stmt)


@contextmanager
def champion_lock(
    engine: Engine, model_name: str, *, client: Any
) -> Iterator[tuple[Connection, str | None]]:
    """Hold the lock on the champion of ``model_name``; yield ``(connection, current version)``.

    The caller's writes on ``connection`` commit when the block exits normally and roll back on an
    exception. PostgreSQL: row lock ``SELECT ... FOR UPDATE``. SQLite: ``BEGIN IMMEDIATE`` (the
    engine's 30 s busy timeout makes waiting writers queue rather than fail).
    """
    _ensure_pointer(engine, model_name, client)
    query = select(ChampionPointer.version).where(ChampionPointer.model_name == model_name)
    if engine.dialect.name == "sqlite":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                current = conn.execute(query).scalar_one()
                _reconcile(client, model_name, current)
                yield conn, current
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
    else:
        with engine.begin() as conn:
            current = conn.execute(query.with_for_update()).scalar_one()
            _reconcile(client, model_name, current)
            yield conn, current


def _reconcile(client: Any, model_name: str, pointer: str | None) -> None:
    """Make the MLflow alias agree with the pointer (the store is the source of truth)."""
    alias = alias_version(client, model_name, CHAMPION)
    if alias == pointer:
        return
    log.warning(
        "model %s: alias champion=%s disagrees with the store (%s); resetting the alias",
        model_name,
        alias,
        pointer,
    )
    if pointer is None:
        client.delete_registered_model_alias(model_name, CHAMPION)
    else:
        try:
            client.set_registered_model_alias(model_name, CHAMPION, pointer)
        except Exception as exc:  # noqa: BLE001 - the pointer's version was deleted
            if not _is_missing(exc):
                raise


def _audit(
    conn: Connection,
    *,
    model_name: str,
    action: str,
    outcome: str,
    from_version: str | None,
    to_version: str | None,
    actor: str,
    reason: str,
    evidence: dict[str, Any],
    fingerprint: str | None,
    now: datetime,
) -> AliasMove:
    values: dict[str, Any] = dict(
        model_name=model_name,
        alias=CHAMPION,
        action=action,
        outcome=outcome,
        from_version=from_version,
        to_version=to_version,
        actor=actor,
        reason=reason,
        evidence=json.dumps(evidence, default=str),
        fingerprint=fingerprint,
        moved_at=now,
    )
    new_id = conn.execute(insert(AliasAudit).values(**values).returning(AliasAudit.id)).scalar_one()
    return AliasMove(id=int(new_id), **{**values, "evidence": evidence})


def _set_status(client: Any, model_name: str, version: str, status: str) -> None:
    try:
        client.set_model_version_tag(model_name, version, STATUS_TAG, status)
    except Exception as exc:  # noqa: BLE001 - a deleted version has no tags to set
        if not _is_missing(exc):
            raise


def _move_locked(
    conn: Connection,
    client: Any,
    *,
    model_name: str,
    from_version: str | None,
    to_version: str,
    action: str,
    actor: str,
    reason: str,
    evidence: dict[str, Any],
    fingerprint: str | None,
    from_status: str,
    now: datetime,
) -> AliasMove:
    """Move the alias while the caller holds :func:`champion_lock` (the only alias writer)."""
    get_version(client, model_name, to_version)
    client.set_registered_model_alias(model_name, CHAMPION, to_version)
    try:
        _set_status(client, model_name, to_version, "champion")
        if from_version is not None and from_version != to_version:
            _set_status(client, model_name, from_version, from_status)
        conn.execute(
            update(ChampionPointer)
            .where(ChampionPointer.model_name == model_name)
            .values(version=to_version, updated_at=now)
        )
        return _audit(
            conn,
            model_name=model_name,
            action=action,
            outcome="moved",
            from_version=from_version,
            to_version=to_version,
            actor=actor,
            reason=reason,
            evidence=evidence,
            fingerprint=fingerprint,
            now=now,
        )
    except BaseException:
        # Undo the alias so it keeps agreeing with the pointer, whose update rolls back.
        if from_version is None:
            client.delete_registered_model_alias(model_name, CHAMPION)
        else:
            client.set_registered_model_alias(model_name, CHAMPION, from_version)
        raise


def _check_actor(actor: str) -> None:
    if actor not in ACTORS:
        raise ValueError(f"actor must be one of {sorted(ACTORS)}, not {actor!r}")


_UNSET: Any = object()


def move_champion(
    model_name: str,
    to_version: str,
    *,
    expected: str | None,
    actor: Actor,
    reason: str,
    evidence: dict[str, Any] | None = None,
    client: Any,
    engine: Engine,
    now: datetime | None = None,
) -> AliasMove:
    """Promote ``to_version`` to champion if the champion is still ``expected`` (compare-and-set).

    Args:
        expected: the champion the caller's decision was made against (None: there was none).
        actor: who asks (``pipeline``, ``guard``, ``alert``, ``human``).
        reason, evidence: stored in the audit row (evidence must be JSON-serialisable).

    Returns:
        The audit row of the move (action ``bootstrap`` when there was no champion).

    Raises:
        ChampionMoved: when the champion is not ``expected``; a ``refused`` audit row is written.
        VersionNotFound: when ``to_version`` does not exist.
    """
    _check_actor(actor)
    to_version = str(to_version)
    evidence = evidence or {}
    refused: ChampionMoved | None = None
    with champion_lock(engine, model_name, client=client) as (conn, current):
        ts = now or _now()
        if current != expected:
            _audit(
                conn,
                model_name=model_name,
                action="promote",
                outcome="refused",
                from_version=current,
                to_version=to_version,
                actor=actor,
                reason=f"compare-and-set failed: expected champion {expected}, found {current}",
                evidence={**evidence, "requested_reason": reason},
                fingerprint=None,
                now=ts,
            )
            refused = ChampionMoved(model_name, expected, current)
        else:
            move = _move_locked(
                conn,
                client,
                model_name=model_name,
                from_version=current,
                to_version=to_version,
                action="bootstrap" if current is None else "promote",
                actor=actor,
                reason=reason,
                evidence=evidence,
                fingerprint=None,
                from_status="retired",
                now=ts,
            )
    if refused is not None:
        raise refused
    return move


def rollback(
    reason: str,
    actor: Actor,
    to: str | None = None,
    fingerprint: str | None = None,
    *,
    model_name: str,
    expected: str | None | Any = _UNSET,
    cooldown_seconds: float,
    evidence: dict[str, Any] | None = None,
    client: Any,
    engine: Engine,
    now: datetime | None = None,
    force: bool = False,
) -> AliasMove:
    """Move ``champion`` back to an earlier good version and mark the current one ``rolled_back``.

    The target is ``to`` when given, else the newest version numbered below the current champion
    whose status is not ``rejected``, ``rolled_back`` or ``candidate`` (never gated). No version is
    ever deleted.

    Args:
        fingerprint: alert fingerprint; a second call with a fingerprint that already moved the
            alias returns that earlier move (``replayed=True``) and changes nothing.
        expected: the champion the caller wants rolled back (e.g. the version an alert is about);
            when the champion has changed since, the rollback is refused. Unset: whatever serves.
        cooldown_seconds: refuse when the previous rollback of this model happened less than this
            long ago (stops flapping); a ``human`` actor is not held to it.
        force: allow ``to`` to name a version that is ``rejected``, ``rolled_back`` or an ungated
            ``candidate`` (refused otherwise: such a version failed the gate or was rolled back).

    Raises:
        RollbackRefused: no champion, no earlier good version, within the cooldown, or ``to`` is a
            version that must not serve again (without ``force``).
        ChampionMoved: the champion is not ``expected``.
        VersionNotFound: ``to`` does not exist (nothing is written).
        The refusals above, except ``VersionNotFound``, also write a ``refused`` audit row.
    """
    _check_actor(actor)
    evidence = {**(evidence or {}), **({"fingerprint": fingerprint} if fingerprint else {})}
    error: RegistryError | None = None
    with champion_lock(engine, model_name, client=client) as (conn, current):
        ts = now or _now()
        if fingerprint is not None:
            row = conn.execute(
                select(AliasAudit.__table__).where(
                    AliasAudit.model_name == model_name, AliasAudit.fingerprint == fingerprint
                )
            ).first()
            if row is not None:
                return _to_move(row, replayed=True)

        def refuse(message: str, exc: RegistryError, target: str | None = None) -> None:
            nonlocal error
            _audit(
                conn,
                model_name=model_name,
                action="rollback",
                outcome="refused",
                from_version=current,
                to_version=target,
                actor=actor,
                reason=f"{message} (requested: {reason})",
                evidence=evidence,
                fingerprint=None,
                now=ts,
            )
            error = exc

        if expected is not _UNSET and current != expected:
            refuse(
                f"compare-and-set failed: expected champion {expected}, found {current}",
                ChampionMoved(model_name, expected, current),
            )
        elif current is None:
            refuse(
                "no champion to roll back",
                RollbackRefused(f"model {model_name!r} has no champion to roll back"),
            )
        else:
            last = _last_rollback(conn, model_name)
            last_at = _aware(last) if last is not None else None
            wait = (
                None
                if last_at is None
                else (last_at + timedelta(seconds=cooldown_seconds) - ts).total_seconds()
            )
            if actor != "human" and last_at is not None and wait is not None and wait > 0:
                msg = (
                    f"model {model_name!r}: the last rollback was at {last_at.isoformat()}; "
                    f"cooldown of {cooldown_seconds:g}s leaves {wait:.0f}s"
                )
                refuse("cooldown", RollbackRefused(msg))
            else:
                target = (
                    str(to) if to is not None else _rollback_target(client, model_name, current)
                )
                if target is None:
                    refuse(
                        "no earlier good version",
                        RollbackRefused(
                            f"model {model_name!r}: no version below {current} that is neither "
                            f"rejected, rolled back nor an ungated candidate"
                        ),
                    )
                elif (
                    to is not None
                    and not force
                    and (bad_status := version_status(get_version(client, model_name, target)))
                    in NEVER_ROLL_BACK_TO
                ):
                    refuse(
                        f"target version {target} is {bad_status}",
                        RollbackRefused(
                            f"model {model_name!r}: version {target} is {bad_status}; "
                            "roll back to it only deliberately, with --force"
                        ),
                        target,
                    )
                elif target == current:
                    refuse(
                        "target is the champion",
                        RollbackRefused(
                            f"model {model_name!r}: version {target} is already champion"
                        ),
                    )
                else:
                    return _move_locked(
                        conn,
                        client,
                        model_name=model_name,
                        from_version=current,
                        to_version=target,
                        action="rollback",
                        actor=actor,
                        reason=reason,
                        evidence=evidence,
                        fingerprint=fingerprint,
                        from_status="rolled_back",
                        now=ts,
                    )
    assert error is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
    raise error


def _last_rollback(conn: Connection, model_name: str) -> datetime | None:
    return conn.execute(
        select(AliasAudit.moved_at)
        .where(
            AliasAudit.model_name == model_name,
            AliasAudit.action == "rollback",
            AliasAudit.outcome == "moved",
        )
        .order_by(AliasAudit.moved_at.desc())
        .limit(1)
    ).scalar_one_or_none()


def _rollback_target(client: Any, model_name: str, current: str) -> str | None:
    for mv in list_versions(client, model_name):
        if int(mv.version) < int(current) and version_status(mv) not in NEVER_ROLL_BACK_TO:
            return str(mv.version)
    return None


def _to_move(row: Any, replayed: bool = False) -> AliasMove:
    return AliasMove(
        id=row.id,
        model_name=row.model_name,
        alias=row.alias,
        action=row.action,
        outcome=row.outcome,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        evidence=json.loads(row.evidence),
        fingerprint=row.fingerprint,
        moved_at=_aware(row.moved_at),
        replayed=replayed,
    )


def history(
    engine: Engine, model_name: str, *, limit: int | None = None, include_refused: bool = True
) -> list[AliasMove]:
    """Alias history/audit of ``model_name``, newest first."""
    query = select(AliasAudit.__table__).where(AliasAudit.model_name == model_name)
    if not include_refused:
        query = query.where(AliasAudit.outcome == "moved")
    query = query.order_by(AliasAudit.moved_at.desc(), AliasAudit.id.desc())
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [_to_move(r) for r in conn.execute(query)]


def reject(model_name: str, version: str, decision: GateDecision, *, client: Any) -> None:
    """Tag ``version`` as rejected by the gate (the alias does not move)."""
    _tag_decision(client, model_name, version, decision)
    _set_status(client, model_name, version, "rejected")


def _tag_decision(client: Any, model_name: str, version: str, decision: GateDecision) -> None:
    client.set_model_version_tag(model_name, version, DECISION_TAG, decision.outcome)
    client.set_model_version_tag(
        model_name,
        version,
        REASONS_TAG,
        f"{decision.reason_code}: {'; '.join(decision.reasons)}"[:_TAG_LIMIT],
    )


# --- models and scoring ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedModel:
    """A registered model version ready to score.

    Attributes:
        predict: maps a feature frame (``UseCase.feature_frame`` of row frames: the signature's
            columns) to shape ``(n,)`` scores: probabilities (binary classification) or predicted
            label values (regression).
        size_bytes: bytes of the stored XGBoost model file. feature_names: signature input names.
    """

    version: str
    run_id: str | None
    predict: Callable[[pd.DataFrame], np.ndarray]
    size_bytes: int
    feature_names: tuple[str, ...] | None


def load_version(
    client: Any, model_name: str, version: str, *, alias: str | None = None, dst: Path | None = None
) -> LoadedModel:
    """Download and load an XGBoost model version logged with ``mlflow.xgboost``.

    ``dst`` keeps the downloaded files there; by default they go to a temporary folder that is
    removed once the model is in memory.

    Raises:
        AliasTargetMissing / VersionNotFound: when the version does not exist.
    """
    import tempfile

    import mlflow.artifacts
    import mlflow.xgboost
    from mlflow.models import Model

    mv = get_version(client, model_name, version, alias=alias)
    with tempfile.TemporaryDirectory(prefix="rollguard-model-") as tmp:
        # Resolve the version's own artifact location through this client: a ``models:/`` URI
        # would be resolved against the process's default registry, not the client's.
        source = client.get_model_version_download_uri(model_name, str(version))
        root = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source,
                dst_path=str(dst or tmp),
                tracking_uri=client.tracking_uri,
            )
        )
        model = mlflow.xgboost.load_model(str(root))  # fully in memory: the folder may go
        meta = Model.load(str(root / "MLmodel"))
        data = meta.flavors.get("xgboost", {}).get("data")
        files = [root / data] if data and (root / data).is_file() else list(root.rglob("*"))
        size = sum(p.stat().st_size for p in files if p.is_file())
    names = tuple(meta.signature.inputs.input_names()) if meta.signature is not None else None

    def predict(frame: pd.DataFrame) -> np.ndarray:
        if hasattr(model, "predict_proba"):  # a classifier of XGBoost's scikit-learn API
            return np.asarray(model.predict_proba(frame)[:, 1], dtype=np.float64)
        if hasattr(model, "get_booster"):  # a regressor of the scikit-learn API
            return np.asarray(model.predict(frame), dtype=np.float64)
        import xgboost as xgb

        matrix = xgb.DMatrix(frame, enable_categorical=True)
        return np.asarray(model.predict(matrix), dtype=np.float64)

    return LoadedModel(str(version), mv.run_id, predict, size, names)


def score_with_latency(
    model: LoadedModel, features: pd.DataFrame, repeats: int = 2
) -> tuple[np.ndarray, float]:
    """Scores (shape ``(n,)``) and batch latency in seconds per 10,000 rows (best of ``repeats``)."""
    best = float("inf")
    scores = np.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        scores = model.predict(features)
        best = min(best, time.perf_counter() - start)
    return scores, best / max(len(features), 1) * 10_000


def paired_latency(
    challenger: LoadedModel, champion: LoadedModel, features: pd.DataFrame, rounds: int = 5
) -> tuple[float, float]:
    """Batch latency of both models, seconds per 10,000 rows, timed in alternation.

    Each round times the challenger, then the champion, on the same rows; each model's figure is
    its best round (the minimum is the least disturbed run, as :mod:`timeit` recommends). Timing
    them apart (one model's repeats, then the other's) let a burst of load on a shared machine
    land on one side only: in a hotel demo on a busy 2-core machine the champions measured 0.033 to
    0.157 s per 10,000 rows across the run's gates, and two challengers with a far lower MAE
    failed the 1.5x ratio at 2.9x (``docs/decisions.md``, "What changed in the defaults").
    Alternating gives both models the same conditions.

    Returns:
        ``(challenger seconds per 10k rows, champion seconds per 10k rows)``.
    """
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for side, model in enumerate((challenger, champion)):
            start = time.perf_counter()
            model.predict(features)
            best[side] = min(best[side], time.perf_counter() - start)
    per_10k = 10_000 / max(len(features), 1)
    return best[0] * per_10k, best[1] * per_10k


@dataclass(frozen=True)
class GateInputs:
    """What the gate needs from an evaluation row frame, derived from the use case.

    Attributes:
        features: ``usecase.feature_frame(rows)``, the model inputs.
        labels: shape ``(n,)``: 0/1 int64 (binary classification) or float64 (regression).
        values: shape ``(n,)`` float64, the business value (``usecase.value.column``).
        slices: slice name -> shape ``(n,)`` segment labels (str), one per ``usecase.slices``.
    """

    features: pd.DataFrame
    labels: np.ndarray
    values: np.ndarray
    slices: dict[str, np.ndarray]


def gate_inputs(rows: pd.DataFrame, usecase: UseCase) -> GateInputs:
    """Labels, values, slices and model inputs of matured evaluation rows (row frames of
    ``usecase``; rows whose ``label_available`` is False are left out).

    Raises:
        RegistryError: a label, value, slice or feature column is missing, or no row is left.
    """
    needed = [usecase.label.column, usecase.value.column, *(s.column for s in usecase.slices)]
    missing = [c for c in (*needed, *usecase.feature_names) if c not in rows.columns]
    if missing:
        raise RegistryError(f"evaluation rows lack columns {missing}")
    if LABEL_AVAILABLE_COLUMN in rows.columns:
        rows = rows.loc[rows[LABEL_AVAILABLE_COLUMN].astype(bool)]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        raise RegistryError("no evaluation rows with a matured label")
    return GateInputs(
        features=usecase.feature_frame(rows),
        labels=rows[usecase.label.column].to_numpy(
            dtype=np.int64 if usecase.is_classification else np.float64
        ),
        values=rows[usecase.value.column].to_numpy(dtype=np.float64, na_value=np.nan),
        slices={s.name: rows[s.column].astype(str).to_numpy() for s in usecase.slices},
    )


def _training_median(client: Any, model_name: str, version: str) -> float | None:
    """The version's training-median label (tag :data:`monitoring.weekly.TRAINING_MEDIAN_TAG`,
    regression models only), or None."""
    tags = client.get_model_version(model_name, version).tags or {}
    value = tags.get(TRAINING_MEDIAN_TAG)
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _score_models(
    client: Any,
    model_name: str,
    challenger_version: str,
    champion_version: str | None,
    features: pd.DataFrame,
) -> tuple[LoadedModel, ModelEvidence, ModelEvidence | ChampionUnavailable | None]:
    """Load and score the challenger (errors propagate) and the champion (any failure becomes
    :class:`ChampionUnavailable`) on the same feature rows."""
    chal = load_version(client, model_name, challenger_version)
    chal_scores, chal_latency = score_with_latency(chal, features)
    evidence = ModelEvidence(
        chal_scores, challenger_version, chal_latency, chal.size_bytes, chal.feature_names
    )
    champion: ModelEvidence | ChampionUnavailable | None = None
    if champion_version is not None:
        try:
            champ = load_version(client, model_name, champion_version, alias=CHAMPION)
            scores = champ.predict(features)
            chal_latency, latency = paired_latency(chal, champ, features)
            evidence = replace(evidence, latency_seconds_per_10k=chal_latency)
            champion = ModelEvidence(
                scores, champion_version, latency, champ.size_bytes, champ.feature_names
            )
        except Exception as exc:  # noqa: BLE001 - any failure to load or score is reported
            champion = ChampionUnavailable(champion_version, f"{type(exc).__name__}: {exc}")
    return chal, evidence, champion


def _evaluation_cutoffs(evaluation: pd.DataFrame) -> tuple[str, ...]:
    """The distinct cutoffs of evaluation rows as ISO dates (empty without a cutoff column)."""
    if CUTOFF_COLUMN not in evaluation.columns:
        return ()
    days = pd.to_datetime(evaluation[CUTOFF_COLUMN]).dt.date.unique()
    return tuple(sorted(d.isoformat() for d in days))


def tag_score_reference(client: Any, model_name: str, version: str, ref: ScoreReference) -> None:
    """Keep ``ref`` with ``version`` (tag :data:`domain.live_profile.SCORE_REFERENCE_TAG`): what the
    model server compares the version's live scores with (docs/design.md, "Live signals")."""
    client.set_model_version_tag(model_name, version, SCORE_REFERENCE_TAG, ref.to_json())


def read_score_reference(client: Any, model_name: str, version: str) -> ScoreReference | None:
    """The score reference kept with ``version``, or None when it has none or it is unreadable
    (logged: a damaged tag never blocks a move).

    Raises:
        VersionNotFound: no such version.
    """
    text = (get_version(client, model_name, version).tags or {}).get(SCORE_REFERENCE_TAG)
    if not text:
        return None
    try:
        return ScoreReference.from_json(text)
    except LiveProfileError as exc:
        log.warning("version %s of %s: %s", version, model_name, exc)
        return None


def force_promote(
    model_name: str,
    to_version: str,
    *,
    expected: str | None,
    reason: str,
    client: Any,
    engine: Engine,
    evidence: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AliasMove:
    """A person's promotion that skips the gate (``promote --force``), audited as ``human``.

    The version never passed the gate, so its own scores are not an approved reference: before the
    move, it gets the score reference of the champion it replaces (``expected``) with source
    ``replaced`` — the last distribution the gate approved for this population — so that the
    model server and the guard compare its live scores with that (docs/design.md, "Live signals").
    Without a champion, or a champion without a reference, the version keeps whatever it has; when
    the move fails (the champion moved meanwhile), the version gets its own tag back.

    Raises:
        ChampionMoved, VersionNotFound: as :func:`move_champion`.
    """
    to_version = str(to_version)
    own = (get_version(client, model_name, to_version).tags or {}).get(SCORE_REFERENCE_TAG)
    outgoing = read_score_reference(client, model_name, expected) if expected else None
    if outgoing is not None and expected != to_version:
        tag_score_reference(client, model_name, to_version, outgoing.as_replaced())
    try:
        return move_champion(
            model_name,
            to_version,
            expected=expected,
            actor="human",
            reason=reason,
            evidence={
                **(evidence or {}),
                "forced": True,
                "live_reference": None
                if outgoing is None
                else {"version": outgoing.version, "source": "replaced"},
            },
            client=client,
            engine=engine,
            now=now,
        )
    except BaseException:
        # Nothing moved: the version keeps the reference it had.
        if outgoing is not None and expected != to_version:
            if own is None:
                client.delete_model_version_tag(model_name, to_version, SCORE_REFERENCE_TAG)
            else:
                client.set_model_version_tag(model_name, to_version, SCORE_REFERENCE_TAG, own)
        raise


def run_gate(
    evaluation: pd.DataFrame,
    *,
    usecase: UseCase,
    model_name: str,
    policy: GatePolicy,
    client: Any,
    engine: Engine,
    budget: float | None = None,
    version: str | None = None,
    actor: Actor = "pipeline",
    apply: bool = True,
    now: datetime | None = None,
    reason: str | None = None,
) -> GateRun:
    """Evaluate the challenger against the champion, record the decision and apply it.

    Args:
        evaluation: out-of-time evaluation rows, row frames of ``usecase`` (e.g.
            ``domain.evaluation.evaluation_rows(settings).rows``); see :func:`gate_inputs`.
        usecase: the use case: task type, label, value, slices and features.
        budget: targeting budget (default: the use case's; ``settings.targeting_budget``).
        version: challenger version; default: the version behind the ``challenger`` alias.
        apply: when True, a passing decision moves ``champion`` (CAS on the champion the gate ran
            against) and a reject tags the version ``rejected``.
        reason: why the caller asked (a person's ``--reason``); kept in the audit row of the move,
            and of the refusal when the gate does not pass.

    Returns:
        :class:`GateRun`. The report is logged on the challenger's MLflow run as
        ``gate/gate_report.json`` and ``gate/gate_report.md`` and stored in ``gate_decisions``.

    Raises:
        RegistryError: no challenger, the challenger is already champion, or the rows lack a
            column (see :func:`gate_inputs`).
        ChampionMoved: the champion changed while the gate ran (nothing was promoted).
    """
    _check_actor(actor)
    inputs = gate_inputs(evaluation, usecase)
    challenger_version = (
        str(version) if version is not None else resolve_alias(client, model_name, CHALLENGER)
    )
    _ensure_pointer(engine, model_name, client)
    champion_version = read_pointer(engine, model_name)
    if champion_version == challenger_version:
        raise RegistryError(
            f"model {model_name!r}: version {challenger_version} is already champion"
        )
    chal, chal_evidence, champion = _score_models(
        client, model_name, challenger_version, champion_version, inputs.features
    )
    decision = evaluate_gate(
        chal_evidence,
        champion,
        inputs.labels,
        inputs.values,
        inputs.slices,
        policy,
        task=usecase.task,
        expected_features=usecase.feature_names,
        label=usecase.label,
        budget=usecase.targeting.budget if budget is None else budget,
        constant=_training_median(client, model_name, challenger_version),
    )
    decision = replace(
        decision, measured_error_rates=gate_error_rates(usecase.name, policy, usecase.task.value)
    )
    tag_score_reference(
        client,
        model_name,
        challenger_version,
        score_reference(
            chal_evidence.scores,
            version=challenger_version,
            cutoffs=_evaluation_cutoffs(evaluation),
        ),
    )
    ts = now or _now()
    artifacts = _record_decision(
        client, engine, model_name, chal.run_id, champion_version, decision, actor, ts
    )
    move = None
    if apply:
        move = _apply_decision(
            client,
            engine,
            model_name,
            challenger_version,
            champion_version,
            decision,
            actor=actor,
            reason=reason,
            now=ts,
        )
    return GateRun(model_name, challenger_version, champion_version, decision, move, artifacts)


def _record_decision(
    client: Any,
    engine: Engine,
    model_name: str,
    run_id: str | None,
    champion_version: str | None,
    decision: GateDecision,
    actor: str,
    ts: datetime,
) -> tuple[str, ...]:
    """Log the report on the challenger's run (when it has one) and store it in
    ``gate_decisions``; return the artifact paths logged."""
    artifacts: tuple[str, ...] = ()
    if run_id:
        client.log_text(run_id, decision.to_json(), "gate/gate_report.json")
        client.log_text(run_id, decision.to_markdown(), "gate/gate_report.md")
        artifacts = ("gate/gate_report.json", "gate/gate_report.md")
    with engine.begin() as conn:
        conn.execute(
            insert(GateDecisionRow).values(
                model_name=model_name,
                challenger_version=decision.challenger_version,
                champion_version=champion_version,
                outcome=decision.outcome,
                reason_code=decision.reason_code,
                actor=actor,
                report=decision.to_json(),
                decided_at=ts,
            )
        )
    return artifacts


def _apply_decision(
    client: Any,
    engine: Engine,
    model_name: str,
    challenger_version: str,
    champion_version: str | None,
    decision: GateDecision,
    *,
    actor: Actor,
    reason: str | None,
    now: datetime,
) -> AliasMove | None:
    """Tag the decision; a pass moves ``champion`` (CAS on ``champion_version``), a reject tags
    the version ``rejected`` (unless the champion was unavailable) and, when a person asked with a
    reason, writes a ``refused`` audit row."""
    _tag_decision(client, model_name, challenger_version, decision)
    if decision.passed:
        return move_champion(
            model_name,
            challenger_version,
            expected=champion_version,
            actor=actor,
            reason=(f"{reason}; " if reason else "")
            + f"gate {decision.outcome}: {decision.reasons[0]}",
            evidence={"gate": decision.to_dict()},
            client=client,
            engine=engine,
            now=now,
        )
    if decision.reason_code != "champion_unavailable":
        reject(model_name, challenger_version, decision, client=client)
    if reason is not None:
        with engine.begin() as conn:
            _audit(
                conn,
                model_name=model_name,
                action="promote",
                outcome="refused",
                from_version=champion_version,
                to_version=challenger_version,
                actor=actor,
                reason=f"{reason}; gate {decision.outcome}: {decision.reasons[0]}",
                evidence={"gate": decision.to_dict()},
                fingerprint=None,
                now=now,
            )
    return None


def describe_models(client: Any, engine: Engine, model_name: str) -> list[dict[str, Any]]:
    """One entry per version, newest first: version, status, aliases, gate decision, run id.

    Raises:
        AliasTargetMissing: when the champion pointer or an alias names a deleted version.
    """
    versions = list_versions(client, model_name)
    if not versions:
        return []
    existing = {str(mv.version) for mv in versions}
    pointer = read_pointer(engine, model_name)
    if pointer is not None and pointer not in existing:
        raise AliasTargetMissing(model_name, CHAMPION, pointer)
    for alias in (CHAMPION, CHALLENGER):
        target = alias_version(client, model_name, alias)
        if target is not None and target not in existing:
            raise AliasTargetMissing(model_name, alias, target)
    # search_model_versions leaves ``aliases`` empty on some stores: read them from the model.
    alias_map: dict[str, list[str]] = {}
    for alias, target in (client.get_registered_model(model_name).aliases or {}).items():
        alias_map.setdefault(str(target), []).append(alias)
    return [
        {
            "version": str(mv.version),
            "status": version_status(mv),
            "aliases": sorted(alias_map.get(str(mv.version), [])),
            "is_champion": str(mv.version) == pointer,
            "gate_decision": (mv.tags or {}).get(DECISION_TAG),
            "gate_reasons": (mv.tags or {}).get(REASONS_TAG),
            "run_id": mv.run_id,
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
        }
        for mv in versions
    ]
