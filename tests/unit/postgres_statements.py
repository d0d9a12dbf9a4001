"""A stand-in for an `AsyncSession` on PostgreSQL that keeps the statement it is given instead
of running it: what the unit tests' SQLite cannot show, that a store builds PostgreSQL's own
statement there (run against PostgreSQL in tests/integration)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy.dialects import postgresql


class SentError(Exception):
    """The statement was kept, not run."""


class PostgresStatements:
    def __init__(self) -> None:
        self.statements: list[Any] = []

    def get_bind(self) -> Any:
        return SimpleNamespace(dialect=postgresql.dialect())

    async def execute(self, statement: Any, *args: Any) -> Any:
        self.statements.append(statement)
        raise SentError


def on_postgresql(statement: Any) -> str:
    """The statement as PostgreSQL gets it, on one line."""
    return " ".join(str(statement.compile(dialect=postgresql.dialect())).split())
