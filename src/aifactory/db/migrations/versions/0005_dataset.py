"""Dataset and tokenizer: tokenizer generations, dataset versions, and an index of blocked documents.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tokenizer_generations",
        sa.Column("generation", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tokenizer_hash", sa.String(64), nullable=False),
        sa.Column("model_type", sa.String(16), nullable=False),
        sa.Column("vocab_size", sa.Integer, nullable=False),
        sa.Column("languages", sa.String(200), nullable=False, server_default=""),
        sa.Column("sample_documents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("sample_chars", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("train_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("path", sa.Text, nullable=False, server_default=""),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tag", sa.String(64), nullable=False, unique=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("tokenizer_hash", sa.String(64), nullable=False),
        sa.Column("documents", sa.BigInteger, nullable=False),
        sa.Column("new_documents", sa.BigInteger, nullable=False),
        sa.Column("train_tokens", sa.BigInteger, nullable=False),
        sa.Column("val_tokens", sa.BigInteger, nullable=False),
        sa.Column("skipped", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("blocked", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("filtered", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("duplicates", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("per_source", sa.JSON),
        sa.Column("build_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    # The trainer's data source asks "which documents may not be trained on?" between cycles; a partial
    # index answers it in time proportional to the blocked documents, not to the whole table.
    op.create_index(
        "ix_documents_blocked",
        "documents",
        ["id"],
        sqlite_where=sa.text("allowed_for_training = 0"),
        postgresql_where=sa.text("NOT allowed_for_training"),
    )


def downgrade() -> None:
    op.drop_index("ix_documents_blocked", table_name="documents")
    op.drop_table("dataset_versions")
    op.drop_table("tokenizer_generations")
