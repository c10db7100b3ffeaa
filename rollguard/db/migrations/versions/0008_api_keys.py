"""api keys: the clients' keys (hashed) and the key id of each logged prediction

``api_keys`` holds one row per client key of the model server (see :mod:`rollguard.apikeys`): the
public ``key_id`` (8 hex characters, the middle of ``rg_<key_id>_<secret>``), a name, the salted
SHA-256 of the whole key and its salt, never the key itself. ``prediction_log.key_id`` names the
key that asked for a row (NULL when keys are off or for rows logged before this revision).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 12:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_api_keys_key_id")),
    )
    with op.batch_alter_table("prediction_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction_log", schema=None) as batch_op:
        batch_op.drop_column("key_id")
    op.drop_table("api_keys")
