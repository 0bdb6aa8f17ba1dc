"""Flow reservations with fencing tokens, the engine behind each event, and
the second-opinion probes engines ask each other through the database.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        # Which engine incarnation runs the flow, and the fencing token it
        # holds: a takeover increments `token`, so a stale runner is refused.
        batch.add_column(sa.Column("engine_name", sa.String(128), nullable=True))
        batch.add_column(sa.Column("engine_generation", sa.Integer, nullable=True))
        batch.add_column(sa.Column("token", sa.Integer, nullable=False, server_default="1"))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("engine", sa.String(128), nullable=True))
    op.create_table(
        "reachability_probes",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("host_id", sa.Integer, nullable=False),
        sa.Column("asked_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reachability_probes"),
    )
    op.create_index("ix_reachability_probes_created_at", "reachability_probes", ["created_at"])
    op.create_table(
        "reachability_answers",
        sa.Column("probe_id", sa.Integer, nullable=False),
        sa.Column("engine_name", sa.String(128), nullable=False),
        sa.Column("reachable", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["probe_id"], ["reachability_probes.id"], ondelete="CASCADE",
                                name="fk_reachability_answers_probe_id_reachability_probes"),
        sa.PrimaryKeyConstraint("probe_id", "engine_name", name="pk_reachability_answers"),
    )


def downgrade() -> None:
    op.drop_table("reachability_answers")
    op.drop_index("ix_reachability_probes_created_at", "reachability_probes")
    op.drop_table("reachability_probes")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("engine")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("token")
        batch.drop_column("engine_generation")
        batch.drop_column("engine_name")
