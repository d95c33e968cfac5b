"""Serving: RAG passages of the documents and their full-text index.

SQLite: an FTS5 table with the trigram tokenizer over the passages (external content, kept in sync by
triggers, which also fire for the rows ON DELETE CASCADE removes) and its vocabulary table, through
which short queries find the trigrams they begin. PostgreSQL: a GIN index on the passages' tsvector of
trigrams (computed by aifactory.serve.rag, independent of the database's locale).

Revision ID: 0009
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SQLITE_INDEX = [
    "CREATE VIRTUAL TABLE rag_fts USING fts5(text, content='rag_passages', content_rowid='id', "
    "tokenize='trigram')",
    "CREATE VIRTUAL TABLE rag_vocab USING fts5vocab(rag_fts, 'row')",
    "CREATE TRIGGER rag_passages_ai AFTER INSERT ON rag_passages BEGIN "
    "INSERT INTO rag_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER rag_passages_ad AFTER DELETE ON rag_passages BEGIN "
    "INSERT INTO rag_fts(rag_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER rag_passages_au AFTER UPDATE OF text ON rag_passages BEGIN "
    "INSERT INTO rag_fts(rag_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO rag_fts(rowid, text) VALUES (new.id, new.text); END",
]


def upgrade() -> None:
    op.create_table(
        "rag_passages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("doc_id", sa.BigInteger, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ord", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("grams", sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql")),
        sa.UniqueConstraint("doc_id", "ord", name="uq_rag_passages_doc_ord"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_rag_passages_grams", "rag_passages", ["grams"], postgresql_using="gin")
    else:
        for statement in SQLITE_INDEX:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_rag_passages_grams", table_name="rag_passages")
    else:
        for trigger in ("rag_passages_ai", "rag_passages_ad", "rag_passages_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS rag_vocab")
        op.execute("DROP TABLE IF EXISTS rag_fts")
    op.drop_table("rag_passages")
