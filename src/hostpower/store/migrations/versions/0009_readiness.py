"""Fencing readiness: what the PM health check found for each host.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "readiness",
        sa.Column("host_id", sa.Integer, nullable=False),
        sa.Column("readiness", sa.String(16), nullable=False),
        sa.Column("paths", sa.Integer, nullable=False),
        sa.Column("checks", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("engine", sa.String(128), nullable=True),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE",
                                name="fk_readiness_host_id_hosts"),
        sa.PrimaryKeyConstraint("host_id", name="pk_readiness"),
    )


def downgrade() -> None:
    op.drop_table("readiness")
