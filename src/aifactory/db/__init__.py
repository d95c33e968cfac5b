"""The database every node and engine coordinates through (SQLite by default, PostgreSQL for clusters)."""

from aifactory.db.database import Database, DatabaseError

__all__ = ["Database", "DatabaseError"]
