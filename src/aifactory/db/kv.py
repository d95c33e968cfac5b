"""Key/value configuration shared by every node (settings changed from the dashboard at run time)."""

from __future__ import annotations

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import system_config


def set_value(db: Database, key: str, value: str) -> None:
    with db.begin() as conn:
        db.upsert(conn, system_config, {"key": key, "value": value, "updated_at": db.now()}, keys=["key"])


def get_value(db: Database, key: str, default: str | None = None) -> str | None:
    with db.read() as conn:
        value = conn.execute(sa.select(system_config.c.value).where(system_config.c.key == key)).scalar()
    return default if value is None else str(value)


def get_all(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return dict(conn.execute(sa.select(system_config.c.key, system_config.c.value)).all())
