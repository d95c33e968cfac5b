"""Frontier at scale: sites (leases with fencing tokens, per-site politeness), indexes that match the
queries, finished-row retention, and an attempt counter on staged pages.

- `sites`: one row per politeness unit (host name or registrable domain), holding the lease (owner,
  fencing token, expiry as `ready_at`) and the back-off; `hosts` keeps the per-origin robots.txt
  cache and page budget, and names its site. Existing hosts get their host name as site; the crawler
  regroups them when CRAWLER_POLITENESS_PER says otherwise (see db.frontier.ensure_site_mode).
- `frontier`: `finished_at`; due URLs are read in index order; retention finds finished rows by age.
- `staged_pages.attempts`: claims so far, so a page that crashes the text pool is quarantined.

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

MODE_KEY = "crawler.politeness_per"


def _shard(site: str) -> int:
    # The same stable hash as aifactory.collect.urls.shard_of (kept here so the migration stands alone).
    digest = hashlib.blake2b(("shard:" + site).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True) & 0x7FFFFFFF


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("site", sa.String(300), primary_key=True),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("has_work", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ready_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_token", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error_streak", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float),
    )
    op.create_index("ix_sites_claim", "sites", ["has_work", "ready_at"])
    op.create_index("ix_sites_lease_owner", "sites", ["lease_owner"])

    conn = op.get_bind()
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("site", sa.String(300), nullable=False, server_default=""))
    conn.execute(sa.text("UPDATE hosts SET site = hostname"))
    rows = conn.execute(
        sa.text("SELECT site, MAX(CASE WHEN has_work THEN 1 ELSE 0 END) FROM hosts GROUP BY site")
    ).all()
    sites = sa.table(
        "sites",
        sa.column("site", sa.String),
        sa.column("shard", sa.Integer),
        sa.column("has_work", sa.Boolean),
        sa.column("ready_at", sa.Float),
    )
    if rows:
        conn.execute(
            sites.insert(),
            [
                {"site": site, "shard": _shard(site), "has_work": bool(work), "ready_at": 0.0}
                for site, work in rows
            ],
        )
    op.drop_index("ix_hosts_claim", table_name="hosts")
    op.drop_index("ix_hosts_lease_owner", table_name="hosts")
    with op.batch_alter_table("hosts") as batch:
        for column in ("shard", "ready_at", "lease_owner", "lease_expires", "error_streak"):
            batch.drop_column(column)
    op.create_index("ix_hosts_site", "hosts", ["site"])
    if rows:  # the crawler regroups these by CRAWLER_POLITENESS_PER at its next start
        system_config = sa.table("system_config", sa.column("key", sa.String), sa.column("value", sa.Text))
        conn.execute(system_config.delete().where(system_config.c.key == MODE_KEY))
        conn.execute(system_config.insert().values(key=MODE_KEY, value="host"))

    op.add_column("frontier", sa.Column("finished_at", sa.Float))
    conn.execute(
        sa.text(
            "UPDATE frontier SET finished_at = COALESCE(last_fetched_at, discovered_at) "
            "WHERE next_fetch_at IS NULL"
        )
    )
    op.drop_index("ix_frontier_due", table_name="frontier")
    op.create_index(
        "ix_frontier_queue",
        "frontier",
        ["origin", "state", sa.text("priority DESC"), "discovered_at", "url_hash"],
    )
    op.create_index("ix_frontier_next", "frontier", ["origin", "state", "next_fetch_at"])
    op.create_index(
        "ix_frontier_finished",
        "frontier",
        ["finished_at"],
        postgresql_where=sa.text("next_fetch_at IS NULL"),
        sqlite_where=sa.text("next_fetch_at IS NULL"),
    )

    op.add_column("staged_pages", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("staged_pages", "attempts")
    for name in ("ix_frontier_finished", "ix_frontier_next", "ix_frontier_queue"):
        op.drop_index(name, table_name="frontier")
    op.create_index("ix_frontier_due", "frontier", ["origin", "state", "priority"])
    op.drop_column("frontier", "finished_at")

    op.drop_index("ix_hosts_site", table_name="hosts")
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("shard", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("ready_at", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_owner", sa.String(128)))
        batch.add_column(sa.Column("lease_expires", sa.Float))
        batch.add_column(sa.Column("error_streak", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("site")
    op.create_index("ix_hosts_claim", "hosts", ["has_work", "ready_at"])
    op.create_index("ix_hosts_lease_owner", "hosts", ["lease_owner"])
    system_config = sa.table("system_config", sa.column("key", sa.String))
    op.get_bind().execute(system_config.delete().where(system_config.c.key == MODE_KEY))
    op.drop_index("ix_sites_lease_owner", table_name="sites")
    op.drop_index("ix_sites_claim", table_name="sites")
    op.drop_table("sites")
