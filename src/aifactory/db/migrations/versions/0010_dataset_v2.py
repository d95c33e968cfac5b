"""Dataset generation 2: tombstones of replaced documents, per-language validation in the metrics.

Revision ID: 0010
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "document_removals",
        sa.Column("doc_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False, server_default="replaced"),
        sa.Column("removed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("document_removals")
