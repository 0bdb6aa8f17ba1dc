"""Inventory, power management and configuration.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_centers",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_centers"),
        sa.UniqueConstraint("name", name="uq_data_centers_name"),
    )
    op.create_table(
        "clusters",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("data_center_id", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("fencing_enabled", sa.Boolean, nullable=False),
        sa.Column("skip_if_connectivity_broken", sa.Boolean, nullable=False),
        sa.Column("connectivity_threshold", sa.Integer, nullable=False),
        sa.Column("skip_if_sd_active", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_clusters"),
        sa.UniqueConstraint("name", name="uq_clusters_name"),
        sa.ForeignKeyConstraint(["data_center_id"], ["data_centers.id"],
                                name="fk_clusters_data_center_id_data_centers"),
    )
    op.create_index("ix_clusters_data_center_id", "clusters", ["data_center_id"])
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("cluster_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("non_operational_reason", sa.String(64), nullable=True),
        sa.Column("pm_enabled", sa.Boolean, nullable=False),
        sa.Column("pm_automatic", sa.Boolean, nullable=False),
        sa.Column("pm_kdump_detection", sa.Boolean, nullable=False),
        sa.Column("pm_proxy_preferences", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hosts"),
        sa.UniqueConstraint("name", name="uq_hosts_name"),
        sa.UniqueConstraint("address", name="uq_hosts_address"),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"],
                                name="fk_hosts_cluster_id_clusters"),
    )
    op.create_index("ix_hosts_cluster_id", "hosts", ["cluster_id"])
    op.create_table(
        "fence_agents",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("host_id", sa.Integer, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_encrypted", sa.Text, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("encrypt_options", sa.Boolean, nullable=False),
        sa.Column("agent_order", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fence_agents"),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE",
                                name="fk_fence_agents_host_id_hosts"),
    )
    op.create_index("ix_fence_agents_host_id", "fence_agents", ["host_id"])
    op.create_table(
        "config",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_config"),
    )


def downgrade() -> None:
    for table in ("config", "fence_agents", "hosts", "clusters", "data_centers"):
        op.drop_table(table)
