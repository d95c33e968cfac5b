"""Text pipeline: documents, the MinHash LSH index, source policies (with defaults), staged pages.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The defaults the original seeded (kept here, frozen: later changes to the code's list need their
# own migration, and a default a user deleted must not come back).
DEFAULT_POLICIES = [
    ("wikipedia.org", "cc-by-sa-4.0", True, 1.4, "Wikipedia text is CC BY-SA"),
    ("wikimedia.org", "cc-by-sa-4.0", True, 1.2, "Wikimedia projects"),
    ("arxiv.org", "cc0-metadata", True, 1.3, "titles and abstracts (metadata) are CC0"),
    ("docs.python.org", "psf-2.0", True, 1.3, "Python documentation"),
    ("news.ycombinator.com", "restricted", False, 0.0, "HN comments: not licensed"),
    ("github.com", "mixed", False, 0.8, "code under many licences; opt in per repo"),
    ("facebook.com", "restricted", False, 0.0, "social network: terms forbid"),
    ("instagram.com", "restricted", False, 0.0, "social network: terms forbid"),
    ("x.com", "restricted", False, 0.0, "social network: terms forbid"),
    ("twitter.com", "restricted", False, 0.0, "social network: terms forbid"),
    ("tiktok.com", "restricted", False, 0.0, "social network: terms forbid"),
    ("linkedin.com", "restricted", False, 0.0, "social network: terms forbid"),
    ("reddit.com", "restricted", False, 0.0, "terms forbid training use"),
]


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("url", sa.String(2000), nullable=False, unique=True),
        sa.Column("final_url", sa.String(2000), nullable=False, server_default=""),
        sa.Column("domain", sa.String(255), nullable=False, server_default=""),
        sa.Column("title", sa.String(500), nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("char_count", sa.Integer, nullable=False),
        sa.Column("language", sa.String(16), nullable=False, server_default="und"),
        sa.Column("language_confidence", sa.Float, nullable=False, server_default="0"),
        sa.Column("source_type", sa.String(32), nullable=False),
        sa.Column("quality_score", sa.Float, nullable=False, server_default="0"),
        sa.Column("content_hash", sa.LargeBinary(16), nullable=False, unique=True),
        sa.Column("license_tag", sa.String(64), nullable=False, server_default="unknown"),
        sa.Column("allowed_for_training", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("block_reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("optout_reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("published", sa.String(64), nullable=False, server_default=""),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("minhash", sa.LargeBinary),
    )
    op.create_index("ix_documents_domain", "documents", ["domain"])
    op.create_index("ix_documents_source_type", "documents", ["source_type"])
    op.create_table(
        "minhash_bands",
        sa.Column("band", sa.SmallInteger, primary_key=True),
        sa.Column("band_key", sa.BigInteger, primary_key=True),
        sa.Column(
            "doc_id", sa.BigInteger, sa.ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    policies = op.create_table(
        "source_policies",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("domain_pattern", sa.String(255), nullable=False),
        sa.Column("source_type", sa.String(32), nullable=False, server_default="any"),
        sa.Column("license_tag", sa.String(64), nullable=False, server_default="unknown"),
        sa.Column("allow_training", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("base_weight", sa.Float, nullable=False, server_default="1"),
        sa.Column("notes", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float),
        sa.Column("updated_at", sa.Float),
        sa.UniqueConstraint("domain_pattern", "source_type", name="uq_source_policies_pattern_type"),
    )
    now = time.time()
    op.bulk_insert(
        policies,
        [
            {
                "domain_pattern": pattern,
                "source_type": "any",
                "license_tag": licence,
                "allow_training": allow,
                "base_weight": weight,
                "notes": notes,
                "created_at": now,
                "updated_at": now,
            }
            for pattern, licence, allow, weight, notes in DEFAULT_POLICIES
        ],
    )
    op.create_table(
        "staged_pages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("final_url", sa.String(2000), nullable=False, server_default=""),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False, server_default=""),
        sa.Column("title", sa.String(500), nullable=False, server_default=""),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("train_allowed", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("optout_reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("license_hint", sa.String(64), nullable=False, server_default=""),
        sa.Column("published", sa.String(64), nullable=False, server_default=""),
        sa.Column("links", sa.JSON),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("claimed_until", sa.Float),
    )
    op.create_index("ix_staged_pages_claimed_until", "staged_pages", ["claimed_until"])


def downgrade() -> None:
    op.drop_index("ix_staged_pages_claimed_until", table_name="staged_pages")
    op.drop_table("staged_pages")
    op.drop_table("source_policies")
    op.drop_table("minhash_bands")
    op.drop_index("ix_documents_source_type", table_name="documents")
    op.drop_index("ix_documents_domain", table_name="documents")
    op.drop_table("documents")
