"""Notifications: notifiers, their shared delivery state, and the writing
transaction of each event (PostgreSQL commits ids out of order).

Revision ID: 0013
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("txid", sa.BigInteger, nullable=False, server_default="0"))
    op.create_index("ix_events_txid_id", "events", ["txid", "id"])
    op.create_table(
        "notifiers",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("min_severity", sa.String(16), nullable=False),
        sa.Column("kinds", sa.Text, nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("secret_encrypted", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notifiers"),
        sa.UniqueConstraint("name", name="uq_notifiers_name"),
    )
    op.create_table(
        "notifier_state",
        sa.Column("notifier_id", sa.Integer, nullable=False),
        sa.Column("cursor_txid", sa.BigInteger, nullable=False),
        sa.Column("cursor_id", sa.Integer, nullable=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("instance", sa.String(64), nullable=True),
        sa.Column("token", sa.Integer, nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered", sa.Integer, nullable=False),
        sa.Column("dropped", sa.Integer, nullable=False),
        sa.Column("last_delivered_event", sa.Integer, nullable=True),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["notifier_id"], ["notifiers.id"], ondelete="CASCADE",
                                name="fk_notifier_state_notifier_id_notifiers"),
        sa.PrimaryKeyConstraint("notifier_id", name="pk_notifier_state"),
    )


def downgrade() -> None:
    op.drop_table("notifier_state")
    op.drop_table("notifiers")
    op.drop_index("ix_events_txid_id", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("txid")
