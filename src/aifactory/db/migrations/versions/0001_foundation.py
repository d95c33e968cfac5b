"""Foundation: nodes, engine state, event log, running counters, key/value config.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False, server_default=""),
        sa.Column("pid", sa.Integer),
        sa.Column("instance_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("version", sa.String(32), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="stopped"),
        sa.Column("target_status", sa.String(16)),
        sa.Column("command_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("applied_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.Float),
        sa.Column("last_heartbeat", sa.Float),
        sa.Column("cpu_percent", sa.Float),
        sa.Column("ram_percent", sa.Float),
        sa.Column("api_url", sa.String(255), nullable=False, server_default=""),
        sa.Column("profile", sa.JSON),
    )
    op.create_index("ix_nodes_last_heartbeat", "nodes", ["last_heartbeat"])
    op.create_table(
        "engine_state",
        sa.Column(
            "node_id", sa.String(128), sa.ForeignKey("nodes.node_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("engine", sa.String(64), primary_key=True),
        sa.Column("desired", sa.String(16), nullable=False, server_default="stopped"),
        sa.Column("phase", sa.String(64), nullable=False, server_default="stopped"),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("counters", sa.JSON),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.Float),
        sa.Column("updated_at", sa.Float),
    )
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("level", sa.String(16), nullable=False, server_default="info"),
        sa.Column("source", sa.String(64), nullable=False, server_default=""),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "counters",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float),
    )
    op.create_table(
        "system_config",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float),
    )


def downgrade() -> None:
    for table in ("system_config", "counters", "events", "engine_state"):
        op.drop_table(table)
    op.drop_index("ix_nodes_last_heartbeat", table_name="nodes")
    op.drop_table("nodes")
