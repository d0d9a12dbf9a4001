"""Database fixtures for tests that must pass on SQLite and on the real PostgreSQL.

Each SQLite database is a fresh file; each PostgreSQL one is a fresh database on the session's
server (the `postgres` fixture of tests/conftest.py), dropped afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers import unique

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class DatabaseFactory:
    """Makes empty databases on one backend; drops the PostgreSQL ones at the end."""

    def __init__(self, backend: str, tmp: Path, server: Any | None) -> None:
        self.backend = backend
        self._tmp = tmp
        self._server = server
        self._made: list[str] = []

    async def new(self) -> str:
        """The URL of a new, empty database."""
        name = unique("db").replace("-", "_")
        if self._server is None:
            return f"sqlite+aiosqlite:///{self._tmp / name}.db"
        admin = create_async_engine(self._server.url, isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await admin.dispose()
        self._made.append(name)
        return make_url(self._server.url).set(database=name).render_as_string(False)

    async def drop_all(self) -> None:
        if self._server is None or not self._made or not self._server.running:
            return
        admin = create_async_engine(self._server.url, isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as conn:
                for name in self._made:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await admin.dispose()


@asynccontextmanager
async def open_databases(
    request: pytest.FixtureRequest, tmp: Path
) -> AsyncIterator[DatabaseFactory]:
    """The body of a test module's database fixture, parametrized over `BACKENDS`::

        @pytest.fixture(params=BACKENDS)
        async def databases(request, tmp_path):
            async with open_databases(request, tmp_path) as factory:
                yield factory
    """
    backend: str = request.param
    server = request.getfixturevalue("postgres") if backend == "postgres" else None
    factory = DatabaseFactory(backend, tmp, server)
    try:
        yield factory
    finally:
        await factory.drop_all()
