"""Login throttling (login_failures), and who did it: events.user and
operations.requested_by.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kind", "subject", name="pk_login_failures"),
    )
    op.create_index("ix_login_failures_last_failure_at", "login_failures", ["last_failure_at"])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("user", sa.String(128), nullable=True))
    op.create_index("ix_events_user", "events", ["user"])
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("requested_by", sa.String(128), nullable=True))
    # Until now an API request was recorded as origin "api:<user>" (which did
    # not even fit String(16) for longer names): split it.
    op.execute("UPDATE operations SET requested_by = substr(origin, 5), origin = 'api' "
               "WHERE origin LIKE 'api:%'")


def downgrade() -> None:
    op.execute("UPDATE operations SET origin = substr('api:' || requested_by, 1, 16) "
               "WHERE origin = 'api' AND requested_by IS NOT NULL")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("requested_by")
    op.drop_index("ix_events_user", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("user")
    op.drop_index("ix_login_failures_last_failure_at", "login_failures")
    op.drop_table("login_failures")
