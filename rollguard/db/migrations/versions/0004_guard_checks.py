"""guard checks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 21:01:07.757268
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "guard_checks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("champion_version", sa.String(length=32), nullable=True),
        sa.Column("reference_version", sa.String(length=32), nullable=True),
        sa.Column("previous_version", sa.String(length=32), nullable=True),
        sa.Column("cutoff", sa.String(length=10), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("rolled_back_to", sa.String(length=32), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_checks")),
    )
    with op.batch_alter_table("guard_checks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_guard_checks_model_checked_at", ["model_name", "checked_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("guard_checks", schema=None) as batch_op:
        batch_op.drop_index("ix_guard_checks_model_checked_at")
    op.drop_table("guard_checks")
