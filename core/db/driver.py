"""`DriverInsert`: a hot INSERT sent on the session's own driver connection, in its transaction.

The outbox and inbox rows are the framework's own writes on every transaction that publishes
or handles an event. Through `session.execute()` each costs a trip into SQLAlchemy's greenlet,
a statement cache lookup, an execution context and a result; on aiosqlite also three hops to
the connection's thread (cursor, execute, close) while SQLite's one write lock is held. Here
the statement is compiled once for the dialect (the table's schema, quoting and casts are
SQLAlchemy's own), its values encoded by the columns' own bind processors, and sent straight
to the driver connection the session already holds (asyncpg prepares and caches it): one
round trip on asyncpg, one thread hop on aiosqlite.

The transaction is the session's: the driver path runs only where the driver reports the
transaction open (asyncpg's `is_in_transaction()`; on SQLite also where sqlite3 opens one by
itself before an INSERT, as it does under SQLAlchemy), so the row commits or rolls back with
everything else. Elsewhere, typically an INSERT that is the transaction's first statement on
PostgreSQL (SQLAlchemy sends BEGIN lazily with the first statement), the ordinary
`session.execute()` runs instead and opens it. A driver error is re-raised as SQLAlchemy's
`DBAPIError` (its SQLSTATE kept), as `session.execute()` would raise it.

This is the one module that knows the two drivers' calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

DRIVER_WRITES = "driver.writes"
"""`session.info` key: how many rows this module wrote in the session's transaction (the inbox
tells a handler that wrote through the session from one that did not)."""


class DriverInsert:
    """`INSERT INTO table (columns) VALUES (...)`, compiled once for `dialect`.

    `statement` is what runs through SQLAlchemy when the driver path cannot (it must insert
    the same columns: the inbox's ON CONFLICT DO NOTHING, say); by default a plain insert.
    """

    def __init__(self, table: Table, columns: Sequence[str], dialect: Dialect,
                 statement: Insert | None = None) -> None:
        self.statement = statement if statement is not None else insert(table)
        # inline(): no RETURNING of the generated key, which nobody reads.
        compiled = self.statement.inline().compile(dialect=dialect, column_keys=list(columns))
        self.sql = str(compiled)
        self._names: list[str] = list(compiled.positiontup or ())
        if sorted(self._names) != sorted(columns):
            raise ValueError(f"{self.sql!r} binds {self._names}, not {list(columns)}")
        self._processors = [table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                            for name in self._names]
        self._postgres = dialect.name == "postgresql"
        self._dialect = dialect

    async def execute(self, session: AsyncSession, values: Mapping[str, Any]) -> int:
        """Insert one row in `session`'s transaction; returns the rows inserted (0 when an
        ON CONFLICT DO NOTHING skipped it)."""
        sync = (await session.connection()).sync_connection
        driver = None if sync is None else sync.connection.driver_connection
        if driver is None or not self._inside(driver):
            result = await session.execute(self.statement, dict(values))
            return int(result.rowcount)  # type: ignore[attr-defined]
        args = [value if encode is None else encode(value)
                for encode, value in zip(self._processors, map(values.__getitem__, self._names),
                                         strict=True)]
        try:
            if self._postgres:
                status: str = await driver.execute(self.sql, *args)  # "INSERT 0 1"
                count = int(status.rsplit(" ", 1)[-1])
            else:
                cursor = await driver.execute(self.sql, args)
                count = int(cursor.rowcount)
        except Exception as exc:
            raise _wrapped(exc, self.sql, args, self._dialect) from exc
        info = session.sync_session.info
        info[DRIVER_WRITES] = info.get(DRIVER_WRITES, 0) + 1
        return count

    def _inside(self, driver: Any) -> bool:
        """Whether a row the driver writes now joins the session's transaction."""
        if self._postgres:
            return bool(driver.is_in_transaction())
        # sqlite3 (under aiosqlite) begins a transaction itself before an INSERT unless it
        # was told not to (isolation_level None); SQLAlchemy commits or rolls it back.
        return bool(driver.in_transaction) or driver.isolation_level is not None


def _wrapped(exc: Exception, sql: str, args: list[Any], dialect: Dialect) -> BaseException:
    """`exc` from the driver as `session.execute()` would raise it: a `DBAPIError` subclass
    (IntegrityError, OperationalError...) around the DB-API error, so `core.db.errors` reads
    its SQLSTATE or message the same way. A dropped socket stays an OSError, as
    `unavailable()` expects."""
    if isinstance(exc, OSError):
        return exc
    dbapi = dialect.loaded_dbapi
    error_class = getattr(dbapi, "Error", Exception)
    orig = exc if isinstance(exc, error_class) else _adapted(exc, dbapi)
    return DBAPIError.instance(sql, args, orig, error_class, dialect=dialect)


def _adapted(exc: Exception, dbapi: Any) -> BaseException:
    """An asyncpg error as SQLAlchemy's asyncpg adapter translates it (its own table): the
    DB-API class with `sqlstate`, and asyncpg's error as the cause."""
    table: Mapping[type, Any] = getattr(dbapi, "_asyncpg_error_translate", {})
    for cls in type(exc).__mro__:
        if cls in table:
            adapted: BaseException = table[cls](exc.args[0] if exc.args else str(exc), exc)
            adapted.__cause__ = exc
            return adapted
    return exc
