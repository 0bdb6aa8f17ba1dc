"""SSH access of each host for soft fencing: port (none: no access), user,
and the host key pinned at enrolment.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("ssh_port", sa.Integer, nullable=True))
        batch.add_column(sa.Column("ssh_user", sa.String(32), nullable=False,
                                   server_default="root"))
        batch.add_column(sa.Column("ssh_host_key", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("ssh_host_key")
        batch.drop_column("ssh_user")
        batch.drop_column("ssh_port")
