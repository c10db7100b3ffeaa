"""Tables of the monitoring store. The schema is owned by the alembic migrations beside this module;
``tests/integration/test_migrations.py`` fails when the two disagree."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
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
