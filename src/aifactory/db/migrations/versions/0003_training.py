"""Training: the training_metrics series (step, epoch, tokens, losses, bpb, learning rate, speed, MFU).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "training_metrics",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.Float, nullable=False),
        sa.Column("tokens_seen", sa.BigInteger, nullable=False),
        sa.Column("train_loss", sa.Float),
        sa.Column("val_loss", sa.Float),
        sa.Column("val_bpb", sa.Float),
        sa.Column("best_val_loss", sa.Float),
        sa.Column("lr", sa.Float),
        sa.Column("tokens_per_sec", sa.Float),
        sa.Column("mfu", sa.Float),
    )
    # The charts select a time window; pruning thins by age.
    op.create_index("ix_training_metrics_ts", "training_metrics", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_training_metrics_ts", table_name="training_metrics")
    op.drop_table("training_metrics")
