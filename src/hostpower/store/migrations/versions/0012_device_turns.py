"""Device turns: one command at a time per PM device, across engines.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_turns",
        sa.Column("device", sa.String(300), nullable=False),
        sa.Column("holder", sa.String(300), nullable=False),
        sa.Column("token", sa.String(32), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("free_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device", name="pk_device_turns"),
    )


def downgrade() -> None:
    op.drop_table("device_turns")
