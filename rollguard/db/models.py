"""Tables of the monitoring store. The schema is owned by the alembic migrations beside this module;
``tests/integration/test_migrations.py`` fails when the two disagree."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints the same way on
    SQLite and PostgreSQL."""

    metadata = MetaData(naming_convention=NAMING)


class IngestionDecision(Base):
    """One decision of ingestion about one landing file (one row per file name and content hash).

    ``status`` is ``accepted`` (rows are in the warehouse at ``warehouse_path``), ``quarantined``
    (the file is at ``quarantine_path``; ``reason_code``/``reason_detail`` say why) or ``duplicate``
    (same content as an earlier batch under another name; nothing new was stored).
    """

    __tablename__ = "ingestion_ledger"
    __table_args__ = (
        UniqueConstraint("file_name", "content_sha256", name="uq_ingestion_ledger_file_content"),
        Index("ix_ingestion_ledger_sha", "content_sha256"),
        Index("ix_ingestion_ledger_week_status", "week", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(32), nullable=False)
    file_name: Mapped[str] = mapped_column(String(255), nullable=False)
    content_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    week: Mapped[str | None] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason_detail: Mapped[str | None] = mapped_column(Text)
    n_rows: Mapped[int | None] = mapped_column(Integer)
    warehouse_path: Mapped[str | None] = mapped_column(Text)
    quarantine_path: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class PredictionLogRow(Base):
    """One scored feature row served by the API (one row per request id and row index).

    ``features`` is the JSON object of the use case's features as received; ``score`` is the
    champion's score (a probability in [0, 1], or a predicted value in the label's unit);
    ``entity_id`` is the use case's ``entity_column`` value when the row came from the
    known-entity route (migration 0006 renamed it from ``customer_id``); ``challenger_*`` are set
    only when shadow scoring is on; ``key_id`` is the public id of the API key that asked
    (migration 0008; NULL when keys are off). The unique key makes replaying the API's local spool
    idempotent.
    """

    __tablename__ = "prediction_log"
    __table_args__ = (
        UniqueConstraint("request_id", "row_index", name="uq_prediction_log_request_row"),
        Index("ix_prediction_log_predicted_at", "predicted_at"),
        Index("ix_prediction_log_model_version", "model_version"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), nullable=False)
    row_index: Mapped[int] = mapped_column(Integer, nullable=False)
    predicted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    model_version: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[int | None] = mapped_column(BigInteger)
    features: Mapped[str] = mapped_column(Text, nullable=False)
    score: Mapped[float] = mapped_column(nullable=False)  # Float, from the annotation
    challenger_version: Mapped[str | None] = mapped_column(String(32))
    challenger_score: Mapped[float | None] = mapped_column()
    key_id: Mapped[str | None] = mapped_column(String(8))


class ChampionPointer(Base):
    """The serving version of one registered model: the source of truth for compare-and-set.

    One row per model. Every move of the MLflow alias ``champion`` locks this row (``SELECT ... FOR
    UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), checks ``version`` against the version
    the caller expects, sets the alias, and updates the row in the same transaction
    (see :mod:`registry_guard.registry`). ``version`` is None while there is no champion.
    """

    __tablename__ = "champion_pointer"

    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AliasAudit(Base):
    """One attempt to move the ``champion`` alias (alias history and audit), newest by ``moved_at``.

    ``outcome`` is ``moved`` (the alias now points at ``to_version``) or ``refused`` (the move was
    not made: compare-and-set failed, cooldown, nothing to roll back to; ``reason`` says why).
    ``action`` is ``bootstrap``, ``promote`` or ``rollback``; ``actor`` is ``pipeline``, ``guard``,
    ``alert`` or ``human``; ``evidence`` is a JSON document (gate report, alert fingerprint ...).
    A rollback's ``fingerprint`` is unique per model, which makes rollbacks idempotent per alert.
    """

    __tablename__ = "alias_audit"
    __table_args__ = (
        UniqueConstraint("model_name", "fingerprint", name="uq_alias_audit_model_fingerprint"),
        Index("ix_alias_audit_model_moved_at", "model_name", "moved_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    alias: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    from_version: Mapped[str | None] = mapped_column(String(32))
    to_version: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    evidence: Mapped[str] = mapped_column(Text, nullable=False)
    fingerprint: Mapped[str | None] = mapped_column(String(255))
    moved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class GateDecisionRow(Base):
    """One gate decision about one challenger version (the full report is JSON in ``report``)."""

    __tablename__ = "gate_decisions"
    __table_args__ = (Index("ix_gate_decisions_model_decided_at", "model_name", "decided_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    challenger_version: Mapped[str] = mapped_column(String(32), nullable=False)
    champion_version: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    reason_code: Mapped[str] = mapped_column(String(64), nullable=False)
    actor: Mapped[str] = mapped_column(String(16), nullable=False)
    report: Mapped[str] = mapped_column(Text, nullable=False)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class GuardCheckRow(Base):
    """One check of the live guard on the champion (see :mod:`registry_guard.guard`).

    ``state`` is ``ok``, ``degraded`` or ``inconclusive``; ``cutoff`` (``YYYY-MM-DD``) is the newest
    cutoff of the champion's production predictions; ``reference_version`` produced the gate-time
    scores, ``previous_version`` is the champion it replaced; ``report`` is the JSON guard report;
    ``rolled_back_to`` is set when this check rolled the champion back; ``reason`` says why
    (including a refused rollback).
    """

    __tablename__ = "guard_checks"
    __table_args__ = (Index("ix_guard_checks_model_checked_at", "model_name", "checked_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    champion_version: Mapped[str | None] = mapped_column(String(32))
    reference_version: Mapped[str | None] = mapped_column(String(32))
    previous_version: Mapped[str | None] = mapped_column(String(32))
    cutoff: Mapped[str | None] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    report: Mapped[str] = mapped_column(Text, nullable=False)
    rolled_back_to: Mapped[str | None] = mapped_column(String(32))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class MonitoringResult(Base):
    """One monitoring figure of one week (see :mod:`monitoring`): a row per (week, kind, metric,
    feature). Grafana reads this table through its PostgreSQL datasource.

    - ``week``: the cutoff (``YYYY-MM-DD``, the Monday that starts the scored week) the figure is about.
    - ``kind``: ``data_drift`` (per feature and dataset share), ``score_drift``, ``quality`` (realized,
      on matured labels), ``kpi`` (business KPIs, model and random targeting), ``run`` (run-level facts
      such as sample sizes).
    - ``metric``: the figure's name within its kind (e.g. ``drift_score``, ``drift_share``, ``psi``,
      ``average_precision``, ``lift``); ``feature`` is the feature name or ``''`` for whole-dataset figures.
    - ``value``: the number, ``NULL`` when the state says there is none.
    - ``state``: ``ok``, ``drift`` (a feature or the dataset drifted), ``no_data``, ``skipped``
      (e.g. constant or all-empty column, with the reason in ``detail``), ``schema_mismatch``,
      ``pending`` (label not matured yet).
    - ``sample_size`` / ``reference_size``: rows actually compared after seeded sampling.
    - ``model_version``: the champion version that scored the week, when known.

    Recomputing a week replaces its rows (delete then insert, in one transaction).
    """

    __tablename__ = "monitoring_results"
    __table_args__ = (
        UniqueConstraint(
            "model_name",
            "week",
            "kind",
            "metric",
            "feature",
            name="uq_monitoring_results_key",
        ),
        Index("ix_monitoring_results_week", "week"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    week: Mapped[str] = mapped_column(String(10), nullable=False)
    model_version: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    metric: Mapped[str] = mapped_column(String(64), nullable=False)
    feature: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    value: Mapped[float | None] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)
    sample_size: Mapped[int | None] = mapped_column(Integer)
    reference_size: Mapped[int | None] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class PipelineRun(Base):
    """One run of a pipeline DAG, written by its last step (success) or its failure callback
    (``failed``). The exporter turns the newest rows into ``rollguard_pipeline_last_*`` gauges.

    ``week`` is the newest ingested week (ISO ``YYYY-Www``) the run saw; ``detail`` is JSON.
    """

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        UniqueConstraint("dag_id", "run_id", name="uq_pipeline_runs_dag_run"),
        Index("ix_pipeline_runs_finished_at", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(128), nullable=False)
    run_id: Mapped[str] = mapped_column(String(255), nullable=False)
    week: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)


class ResultLineage(Base):
    """Which accepted batches one derived result was computed from (see :mod:`domain.lineage`).

    One row per result: ``kind`` is ``snapshot`` (the feature snapshot at ``cutoff``; ``model_name``
    and ``model_version`` are ``''``), ``predictions`` (the batch scores of ``model_version`` at
    ``cutoff``), ``drift`` or ``outcomes`` (the week's monitoring rows of ``model_name``; version
    ``''``). ``until`` (``YYYY-MM-DD``) bounds the result's input window: it read every accepted
    batch of an ISO week whose Monday is before ``until``; ``batch_ids`` is the JSON list of those
    batch ids, sorted. A result is stale when the ledger's accepted batches in its window differ
    from ``batch_ids`` (a late or corrected week arrived): staleness is a query, not a guess.
    ``recomputed`` counts how often the result was rebuilt because it was stale.
    """

    __tablename__ = "result_lineage"
    __table_args__ = (
        UniqueConstraint(
            "kind", "model_name", "cutoff", "model_version", name="uq_result_lineage_key"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    cutoff: Mapped[str] = mapped_column(String(10), nullable=False)
    model_version: Mapped[str] = mapped_column(String(32), nullable=False)
    until: Mapped[str] = mapped_column(String(10), nullable=False)
    batch_ids: Mapped[str] = mapped_column(Text, nullable=False)
    n_rows: Mapped[int | None] = mapped_column(Integer)
    recomputed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ApiKey(Base):
    """One client key of the model server (see :mod:`rollguard.apikeys`).

    ``key_id`` is the public part of a key ``rg_<key_id>_<secret>`` (8 lowercase hex characters;
    it appears in logs and metrics); ``hash`` is the hex SHA-256 of ``salt`` + the whole key,
    ``salt`` 16 random bytes in hex; the key itself is never stored. ``revoked_at`` is set once,
    by ``rollguard apikey revoke``.
    """

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("key_id", name="uq_api_keys_key_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(8), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    salt: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
