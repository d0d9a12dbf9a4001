"""FastAPI dependencies of a service's routes, as `Annotated` aliases.

`create_service` builds the Database (and the outbox writer) once and hands them to the app
with `attach(app, database, outbox)`; routes then ask for what they need::

    async def rename(id: str, session: SessionDep) -> ...

`SessionDep` depends on the request's method:

- POST, PUT, PATCH, DELETE...: one transaction per request, committed when the route function
  returns, before the response is sent (so a failed commit is an error response, never a false
  200), rolled back when it raises;
- GET and HEAD (safe methods): reads without BEGIN/COMMIT (`Database.reads()`), each statement
  seeing what was committed when it started, two round trips fewer per request. A write
  through it raises (a 500), never commits piecemeal. A safe route that needs one snapshot
  across statements asks for `SnapshotDep`; one that must write, for `TransactionDep`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases.errors import ConfigurationError
from core.bases.types import EventOutbox
from core.db.engine import Database


def attach(app: FastAPI, database: Database, outbox: EventOutbox | None = None) -> None:
    """Give the app's routes their database and outbox."""
    app.state.database = database
    app.state.outbox = outbox


# The dependencies are `async def` though they never await: FastAPI runs a plain `def`
# dependency in a worker thread, two thread hand-offs per dependency per request.


def database_of(request: Request) -> Database:
    database = getattr(request.app.state, "database", None)
    if not isinstance(database, Database):
        raise ConfigurationError("no database: call core.bases.deps.attach(app, database)")
    return database


def outbox_of(request: Request) -> EventOutbox | None:
    outbox: EventOutbox | None = getattr(request.app.state, "outbox", None)
    return outbox


async def get_database(request: Request) -> Database:
    return database_of(request)


async def get_outbox(request: Request) -> EventOutbox | None:
    return outbox_of(request)


DatabaseDep = Annotated[Database, Depends(get_database)]
OutboxDep = Annotated[EventOutbox | None, Depends(get_outbox)]


SAFE_METHODS = frozenset({"GET", "HEAD"})


def open_session(request: Request) -> AbstractAsyncContextManager[AsyncSession]:
    """The session `SessionDep` gives this request: reads for a safe method, else a
    transaction. For a dependency that needs the session and more (BaseRouter's service):
    one dependency instead of a chain, each of which FastAPI resolves on every request."""
    database = database_of(request)
    return database.reads() if request.method in SAFE_METHODS else database.transaction()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with open_session(request) as session:
        yield session


async def get_transaction(database: DatabaseDep) -> AsyncIterator[AsyncSession]:
    async with database.transaction() as session:
        yield session


async def get_snapshot(database: DatabaseDep) -> AsyncIterator[AsyncSession]:
    async with database.snapshot() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
"""A transaction for a write method, autocommit reads for GET and HEAD."""
TransactionDep = Annotated[AsyncSession, Depends(get_transaction, scope="function")]
"""One transaction whatever the method: for a safe route that must write."""
SnapshotDep = Annotated[AsyncSession, Depends(get_snapshot, scope="function")]
"""Reads that all see one snapshot (REPEATABLE READ, READ ONLY on PostgreSQL)."""
