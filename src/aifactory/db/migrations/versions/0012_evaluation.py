"""Evaluation runs (with parts, prompt results, growth samples), evaluation jobs and the model registry.

Revision ID: 0012
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0013"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _run_fk() -> sa.Column:
    return sa.Column(
        "run_id", sa.BigInteger, sa.ForeignKey("evaluation_runs.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "evaluation_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("checkpoint", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("tokens_seen", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("task_version", sa.String(64), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("mc_accuracy", sa.Float, nullable=False),
        sa.Column("mc_chance", sa.Float, nullable=False),
        sa.Column("bpb", sa.Float),
        sa.Column("prompt_score", sa.Float),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_evaluation_runs_digest", "evaluation_runs", ["digest"])
    op.create_table(
        "evaluation_parts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        _run_fk(),
        sa.Column("part", sa.String(32), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("chance", sa.Float),
        sa.Column("items", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_evaluation_parts_run", "evaluation_parts", ["run_id"])
    op.create_table(
        "prompt_results",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        _run_fk(),
        sa.Column("prompt_id", sa.String(128), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("matched", sa.JSON, nullable=False),
    )
    op.create_index("ix_prompt_results_run", "prompt_results", ["run_id"])
    op.create_table(
        "growth_samples",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        _run_fk(),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("prompt_id", sa.String(128), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_growth_samples_prompt", "growth_samples", ["prompt_id", "step"])
    op.create_table(
        "evaluation_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(1000), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("run_id", sa.BigInteger),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("pid", sa.Integer),
        sa.Column("pid_started", sa.Float),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("updated_at", sa.Float),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("version", sa.Integer, nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("checkpoint", sa.String(255), nullable=False, server_default=""),
        sa.Column("step", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("tokenizer_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("dataset_version", sa.String(128), nullable=False, server_default=""),
        sa.Column("parameters", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("card", sa.JSON, nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("deleted_at", sa.Float),
    )
    op.create_table(
        "model_registry",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("production", sa.Integer),
        sa.Column("previous", sa.Integer),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float),
    )
    op.create_table(
        "model_promotions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("previous", sa.Integer),
        sa.Column("forced", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("candidate_score", sa.Float),
        sa.Column("production_score", sa.Float),
        sa.Column("rule", sa.Text, nullable=False, server_default=""),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("model_promotions", "model_registry", "model_versions", "evaluation_jobs"):
        op.drop_table(table)
    op.drop_index("ix_growth_samples_prompt", table_name="growth_samples")
    op.drop_table("growth_samples")
    op.drop_index("ix_prompt_results_run", table_name="prompt_results")
    op.drop_table("prompt_results")
    op.drop_index("ix_evaluation_parts_run", table_name="evaluation_parts")
    op.drop_table("evaluation_parts")
    op.drop_index("ix_evaluation_runs_digest", table_name="evaluation_runs")
    op.drop_table("evaluation_runs")
