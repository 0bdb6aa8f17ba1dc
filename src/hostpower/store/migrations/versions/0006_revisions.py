"""Revisions: counters that inventory, configuration and host status writes
move, so that every engine's cache knows when it is stale.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revisions = op.create_table(
        "revisions",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_revisions"),
    )
    op.bulk_insert(revisions, [{"name": "inventory", "value": 0}, {"name": "status", "value": 0}])


def downgrade() -> None:
    op.drop_table("revisions")
