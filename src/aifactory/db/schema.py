"""The tables, as SQLAlchemy Core objects the queries are written against.

The schema itself is created and changed only by the migrations in `db/migrations/versions/`; each
issue that needs a table adds a migration and its table here.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real 64-bit identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("node_id", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False, server_default=""),
    sa.Column("pid", sa.Integer),
    sa.Column("instance_id", sa.String(32), nullable=False, server_default=""),
    sa.Column("version", sa.String(32), nullable=False, server_default=""),
    # What the node is doing: running (some engine runs), idle, stopped (process ended cleanly).
    sa.Column("status", sa.String(16), nullable=False, server_default="stopped"),
    # Last start/stop command and its sequence number; the node acknowledges with applied_seq.
    sa.Column("target_status", sa.String(16)),
    sa.Column("command_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("applied_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Float),
    sa.Column("last_heartbeat", sa.Float),
    sa.Column("cpu_percent", sa.Float),
    sa.Column("ram_percent", sa.Float),
    sa.Column("api_url", sa.String(255), nullable=False, server_default=""),
    sa.Column("profile", sa.JSON),
)

engine_state = sa.Table(
    "engine_state",
    metadata,
    sa.Column(
        "node_id", sa.String(128), sa.ForeignKey("nodes.node_id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("engine", sa.String(64), primary_key=True),
    # desired is what the user asked for (survives restarts); phase is what the engine reports.
    sa.Column("desired", sa.String(16), nullable=False, server_default="stopped"),
    sa.Column("phase", sa.String(64), nullable=False, server_default="stopped"),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("counters", sa.JSON),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Float),
    sa.Column("updated_at", sa.Float),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("level", sa.String(16), nullable=False, server_default="info"),
    sa.Column("source", sa.String(64), nullable=False, server_default=""),
    sa.Column("message", sa.Text, nullable=False),
)

counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float),
)

system_config = sa.Table(
    "system_config",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float),
)
