"""result lineage: the accepted batches each derived result was computed from

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "result_lineage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("cutoff", sa.String(length=10), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("until", sa.String(length=10), nullable=False),
        sa.Column("batch_ids", sa.Text(), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=True),
        sa.Column("recomputed", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_lineage")),
        sa.UniqueConstraint(
            "kind", "model_name", "cutoff", "model_version", name="uq_result_lineage_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("result_lineage")
