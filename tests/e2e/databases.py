"""What a service's database holds about one thing (a user id, say), read table by table
without knowing its tables: for checks that an effect happened exactly once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.ext.asyncio import create_async_engine

INFRASTRUCTURE = {"inbox", "outbox", "outbox_lease", "alembic_version"}
"""core's messaging tables: they record deliveries, not the service's own state."""

Snapshot = dict[str, list[tuple[str, ...]]]


def _schemas(sync_conn: Any) -> list[str | None]:
    names = inspect(sync_conn).get_schema_names()
    skip = {"information_schema", "pg_catalog", "pg_toast"}
    return [None] + [n for n in names if n not in skip and n != "public" and n != "main"]


async def rows_mentioning(url: str, needle: str, *, own_only: bool = False) -> Snapshot:
    """`{table: rows}` of every row with a column whose text contains `needle`;
    `own_only` leaves out core's messaging tables."""
    engine = create_async_engine(url)
    found: Snapshot = {}
    try:
        async with engine.connect() as conn:
            tables: list[Table] = []

            def reflect(sync_conn: Any) -> None:
                for schema in _schemas(sync_conn):
                    meta = MetaData(schema=schema)
                    meta.reflect(sync_conn)
                    tables.extend(meta.tables.values())

            await conn.run_sync(reflect)
            for table in tables:
                if own_only and table.name in INFRASTRUCTURE:
                    continue
                rows = (await conn.execute(select(table))).all()
                hits = sorted(tuple(str(v) for v in row) for row in rows
                              if any(needle in str(v) for v in row))
                if hits:
                    found[table.fullname] = hits
    finally:
        await engine.dispose()
    return found
