"""Crawler: hosts (leases, politeness, robots cache), the URL frontier, fetched pages.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("origin", sa.String(300), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("source", sa.String(32), nullable=False, server_default="web"),
        sa.Column("has_work", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ready_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires", sa.Float),
        sa.Column("crawl_delay", sa.Float),
        sa.Column("error_streak", sa.Integer, nullable=False, server_default="0"),
        sa.Column("robots_status", sa.Integer),
        sa.Column("robots_body", sa.Text),
        sa.Column("robots_expires_at", sa.Float),
        sa.Column("tdmrep", sa.Text),
        sa.Column("pages_fetched", sa.Integer, nullable=False, server_default="0"),
        sa.Column("urls_known", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float),
    )
    # The claim query walks hosts with work in ready_at order; the lease index finds a node's hosts.
    op.create_index("ix_hosts_claim", "hosts", ["has_work", "ready_at"])
    op.create_index("ix_hosts_lease_owner", "hosts", ["lease_owner"])

    op.create_table(
        "frontier",
        sa.Column("url_hash", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("origin", sa.String(300), nullable=False),
        sa.Column("depth", sa.Integer, nullable=False, server_default="0"),
        sa.Column("source", sa.String(32), nullable=False, server_default="web"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("scope", sa.Text, nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_fetch_at", sa.Float),
        sa.Column("last_fetched_at", sa.Float),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.String(64)),
        sa.Column("etag", sa.String(300)),
        sa.Column("last_modified", sa.String(100)),
        sa.Column("variant_key", sa.BigInteger),
        sa.Column("discovered_at", sa.Float),
    )
    # A leased host's due URLs, best first; refetches coming due; the trap cap's per-key count.
    op.create_index("ix_frontier_due", "frontier", ["origin", "state", "priority"])
    op.create_index("ix_frontier_refetch", "frontier", ["state", "next_fetch_at"])
    op.create_index("ix_frontier_variant", "frontier", ["variant_key"])

    op.create_table(
        "pages",
        sa.Column("url_hash", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("final_url", sa.Text, nullable=False),
        sa.Column("origin", sa.String(300), nullable=False),
        sa.Column("source", sa.String(32), nullable=False, server_default="web"),
        sa.Column("depth", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False, server_default=""),
        sa.Column("charset", sa.String(64), nullable=False, server_default=""),
        sa.Column("body_bytes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("headers", sa.JSON),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("links", sa.Integer, nullable=False, server_default="0"),
        sa.Column("train_allowed", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("optout_reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("fetched_at", sa.Float, nullable=False),
    )
    op.create_index("ix_pages_fetched_at", "pages", ["fetched_at"])


def downgrade() -> None:
    op.drop_index("ix_pages_fetched_at", table_name="pages")
    op.drop_table("pages")
    for name in ("ix_frontier_variant", "ix_frontier_refetch", "ix_frontier_due"):
        op.drop_index(name, table_name="frontier")
    op.drop_table("frontier")
    op.drop_index("ix_hosts_lease_owner", table_name="hosts")
    op.drop_index("ix_hosts_claim", table_name="hosts")
    op.drop_table("hosts")
