"""Row locks that serialise a check and the write it guards, on both databases.

Under PostgreSQL's READ COMMITTED a statement sees what was committed when it started, so a
check (a count, a claim) and a write that another transaction makes at the same moment can
both pass, each unaware of the other. Taking the same row lock first makes the second wait
for the first's commit, and the statements it runs after the lock see that commit.

SQLite has no row locks, and its driver (pysqlite's default mode) opens the transaction only
at the first write, so reads before it are not even in the transaction. There the lock is a
write that changes nothing: it opens the transaction as the database's one writer, held to the
commit, and everything read after it is read under that lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from services.auth.models import Base


async def lock(session: AsyncSession, model: type[Base], rows: Select[Any]) -> list[Any]:
    """Hold the rows of `model` that `rows` selects until the transaction ends; the rows,
    read under the lock."""
    if session.get_bind().dialect.name == "sqlite":
        key = next(iter(model.__table__.primary_key))
        await session.execute(update(model).where(false()).values({key.name: key}),
                              execution_options={"synchronize_session": False})
        return list((await session.execute(rows)).all())
    return list((await session.execute(rows.with_for_update(of=model))).all())
