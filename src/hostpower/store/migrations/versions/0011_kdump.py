"""kdump detection: each host's fence_kdump messages and each engine's listener.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kdump_sessions",
        sa.Column("host_id", sa.Integer, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(128), nullable=False),
        sa.Column("messages", sa.Integer, nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE",
                                name="fk_kdump_sessions_host_id_hosts"),
        sa.PrimaryKeyConstraint("host_id", name="pk_kdump_sessions"),
    )
    op.create_table(
        "kdump_listeners",
        sa.Column("engine", sa.String(128), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received", sa.Integer, nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("unknown", sa.Integer, nullable=False),
        sa.Column("malformed", sa.Integer, nullable=False),
        sa.Column("last_unknown", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("engine", name="pk_kdump_listeners"),
    )


def downgrade() -> None:
    op.drop_table("kdump_listeners")
    op.drop_table("kdump_sessions")
