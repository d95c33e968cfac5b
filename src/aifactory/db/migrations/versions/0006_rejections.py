"""Dropped pages: a bounded log of rejections with their measured value and threshold, and totals
per domain and reason.

Revision ID: 0006
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rejections",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False, server_default=""),
        sa.Column("source", sa.String(32), nullable=False, server_default=""),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(64), nullable=False, server_default=""),
        sa.Column("value", sa.Float, nullable=False, server_default="0"),
        sa.Column("threshold", sa.Float, nullable=False, server_default="0"),
        sa.Column("language", sa.String(16), nullable=False, server_default=""),
        sa.Column("chars", sa.Integer, nullable=False, server_default="0"),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    # `explain URL` looks rows up by URL; the dashboard filters by domain and reason, newest first.
    op.create_index("ix_rejections_url", "rejections", ["url"])
    op.create_index("ix_rejections_domain_reason", "rejections", ["domain", "reason", "id"])
    op.create_index("ix_rejections_reason", "rejections", ["reason", "id"])
    op.create_table(
        "rejection_counts",
        sa.Column("domain", sa.String(255), primary_key=True),
        sa.Column("reason", sa.String(64), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("rejection_counts")
    op.drop_index("ix_rejections_reason", table_name="rejections")
    op.drop_index("ix_rejections_domain_reason", table_name="rejections")
    op.drop_index("ix_rejections_url", table_name="rejections")
    op.drop_table("rejections")
