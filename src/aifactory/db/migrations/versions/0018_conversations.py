"""Conversations for chat tuning, and the section headings of stored documents.

Revision ID: 0018
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(600), nullable=False, unique=True),
        sa.Column("origin", sa.String(500), nullable=False, server_default=""),
        sa.Column("source_url", sa.String(2000), nullable=False, server_default=""),
        sa.Column("domain", sa.String(255), nullable=False, server_default=""),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("synthetic", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("language", sa.String(16), nullable=False, server_default="und"),
        sa.Column("split", sa.String(8), nullable=False, server_default="train"),
        sa.Column("content_hash", sa.LargeBinary(16), nullable=False, unique=True),
        sa.Column("turns", sa.Integer, nullable=False, server_default="0"),
        sa.Column("char_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("license_tag", sa.String(64), nullable=False, server_default="unknown"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("doc_id", sa.BigInteger),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_conversations_split", "conversations", ["split", "synthetic"])
    op.create_index("ix_conversations_doc_id", "conversations", ["doc_id"])
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("sections", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("sections")
    op.drop_index("ix_conversations_doc_id", table_name="conversations")
    op.drop_index("ix_conversations_split", table_name="conversations")
    op.drop_table("conversations")
