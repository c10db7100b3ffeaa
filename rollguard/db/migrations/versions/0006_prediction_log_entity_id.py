"""prediction log: the key of a known-entity row is generic (customer_id -> entity_id)

The prediction log serves every use case: the id of a row scored by the known-entity route is the
use case's ``entity_column`` value (a customer, a booking...), so the column no longer names one
use case's key. Existing values are kept.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 22:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_log", schema=None) as batch_op:
        batch_op.alter_column("customer_id", new_column_name="entity_id")


def downgrade() -> None:
    with op.batch_alter_table("prediction_log", schema=None) as batch_op:
        batch_op.alter_column("entity_id", new_column_name="customer_id")
