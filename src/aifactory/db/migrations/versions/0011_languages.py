"""Languages: each tokenizer generation's characters per language, and validation per language.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tokenizer_generations") as table:
        table.add_column(sa.Column("language_chars", sa.JSON))
        table.add_column(sa.Column("note", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "validation_metrics",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("val_loss", sa.Float),
        sa.Column("val_bpb", sa.Float),
    )
    op.create_index("ix_validation_metrics_ts", "validation_metrics", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_validation_metrics_ts", table_name="validation_metrics")
    op.drop_table("validation_metrics")
    with op.batch_alter_table("tokenizer_generations") as table:
        table.drop_column("note")
        table.drop_column("language_chars")
