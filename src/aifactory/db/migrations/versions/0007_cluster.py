"""Cluster: counters get one row per node (summed on read); nodes record their process start time.

Revision ID: 0007
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0011"
branch_labels = None
depends_on = None


def _rebuild_counters(per_node: bool) -> None:
    # A new table, filled from the old one, then renamed: changing a primary key in place is not
    # portable (SQLite cannot), and the new key gets its own constraint name on PostgreSQL.
    columns = [sa.Column("name", sa.String(200), nullable=False)]
    if per_node:
        columns.append(sa.Column("node_id", sa.String(128), nullable=False, server_default=""))
    key = ("name", "node_id") if per_node else ("name",)
    op.create_table(
        "counters_new",
        *columns,
        sa.Column("value", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float),
        sa.PrimaryKeyConstraint(*key, name="pk_counters_by_node" if per_node else "pk_counters_by_name"),
    )
    if per_node:
        op.execute(
            "INSERT INTO counters_new (name, node_id, value, updated_at) "
            "SELECT name, '', value, updated_at FROM counters"
        )
    else:
        op.execute(
            "INSERT INTO counters_new (name, value, updated_at) "
            "SELECT name, SUM(value), MAX(updated_at) FROM counters GROUP BY name"
        )
    op.drop_table("counters")
    op.rename_table("counters_new", "counters")


def upgrade() -> None:
    _rebuild_counters(per_node=True)
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("process_started", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("process_started")
    _rebuild_counters(per_node=False)
