"""One adapter object per `IdempotencyStore` implementation: memory, SQLite, PostgreSQL.

The contract's work functions record their effect through the harness: a row written
through the store's session on a database (so it commits, or not, with the inbox row), a
list in memory (which has no transaction to join: see `Capability` `transactional`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from core.db.engine import Database
from core.messaging.idempotency import IdempotencyStore, InMemoryIdempotencyStore
from core.messaging.inbox import DatabaseIdempotencyStore
from tests.contracts.bus_harness import Capability
from tests.integration.databases import DatabaseFactory
from tests.outbox_service import create_schema, effects, metadata


class StoreHarness:
    """A store, and how to write and count a work's effect next to it."""

    def __init__(self, name: str, store: IdempotencyStore, db: Database | None) -> None:
        self.name = name
        self.store = store
        self.db = db
        self._effects: list[str] = []
        self.transactional = (
            Capability(True, "work gets the inbox row's transaction as its session")
            if db is not None else
            Capability(False, "no database: work gets session None, so only the store's own "
                              "record is all-or-nothing; the work's effects are its own"))

    async def effect(self, session: Any, event_id: str) -> None:
        """Record one effect of handling `event_id`, through the store's session if any."""
        if session is None:
            assert self.db is None, f"{self.name} gave the work no session"
            self._effects.append(event_id)
        else:
            await session.execute(insert(effects).values(event_id=event_id, account_id="a",
                                                         seq=0))

    async def effects(self, event_id: str) -> int:
        if self.db is None:
            return self._effects.count(event_id)
        async with self.db.session() as session:
            found = await session.scalar(select(func.count()).select_from(effects)
                                         .where(effects.c.event_id == event_id))
        return int(found or 0)

    async def seen(self, event_id: str, handler: str) -> bool:
        store = self.store
        if isinstance(store, DatabaseIdempotencyStore):
            return await store.seen(event_id, handler)
        assert isinstance(store, InMemoryIdempotencyStore)
        return store.seen(event_id, handler)


@asynccontextmanager
async def open_store(backend: str, tmp: Path, server: Any | None) -> AsyncIterator[StoreHarness]:
    if backend == "memory":
        yield StoreHarness(backend, InMemoryIdempotencyStore(), None)
        return
    databases = DatabaseFactory(backend, tmp, server)
    db = await create_schema(await databases.new())
    try:
        yield StoreHarness(backend, DatabaseIdempotencyStore(db, metadata), db)
    finally:
        await db.dispose()
        await databases.drop_all()
