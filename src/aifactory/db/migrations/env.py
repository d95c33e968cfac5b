"""Alembic environment: always run on the connection `aifactory.db.migrate` hands over."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
# Batch mode lets later migrations alter columns on SQLite (which rebuilds the table to do so).
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
