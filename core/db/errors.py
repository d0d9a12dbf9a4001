"""What a database error means, read the same way on SQLite and PostgreSQL.

Drivers report constraint violations differently (SQLSTATE codes on PostgreSQL, message text
on SQLite); callers want to know "which unique field clashed" without knowing the driver.
Likewise whether the database refused a value as data (`refused_value`): the client's input
then, not a fault of the service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

ViolationKind = Literal["unique", "foreign_key", "not_null", "check", "other"]

_PG_CODES: dict[str, ViolationKind] = {
    "23505": "unique",
    "23503": "foreign_key",
    "23502": "not_null",
    "23514": "check",
}
_SQLITE = re.compile(r"(UNIQUE|FOREIGN KEY|NOT NULL|CHECK) constraint failed:?\s*(.*)")
_SQLITE_KINDS: dict[str, ViolationKind] = {
    "UNIQUE": "unique",
    "FOREIGN KEY": "foreign_key",
    "NOT NULL": "not_null",
    "CHECK": "check",
}
_PG_KEY = re.compile(r"Key \((?P<cols>[^)]*)\)")


@dataclass(frozen=True, slots=True)
class ConstraintViolation:
    """The kind of constraint that failed and, when the database says, its columns."""

    kind: ViolationKind
    columns: tuple[str, ...] = ()
    constraint: str | None = None


def refused_value(exc: DBAPIError) -> bool:
    """Whether the database refused a value as data: too long for its column, out of range, a
    character it cannot store (SQLSTATE class 22). The asyncpg adapter reports some of these
    as a plain DBAPIError, so the SQLSTATE decides, not only the class."""
    if isinstance(exc, DataError):
        return True
    code = _sqlstate(exc)
    return code is not None and code.startswith("22")


_TRANSIENT_SQLSTATES = ("08", "53", "57P", "40001", "40P01")
"""Connection exceptions, insufficient resources, operator intervention (shutdown, cannot
connect now), serialization failure, deadlock: conditions that pass, not bugs."""


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot serve right now (down, restarting, no free
    connection in the pool, SQLite's file locked by another writer), as opposed to refusing
    what was asked of it. Such a failure is worth waiting out; it is nobody's bug."""
    if isinstance(exc, PoolTimeoutError | OSError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    code = _sqlstate(exc)
    if code is not None:
        return code.startswith(_TRANSIENT_SQLSTATES)
    if isinstance(exc, OperationalError):
        message = str(exc.orig).lower()
        # SQLite: contention is transient; "no such table" and the like are not.
        return "locked" in message or "busy" in message or "connect" in message
    return False


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    cause = getattr(orig, "__cause__", None)  # asyncpg's own exception behind the adapter
    code = getattr(orig, "sqlstate", None) or getattr(cause, "sqlstate", None)
    return None if code is None else str(code)


def constraint_violation(exc: IntegrityError) -> ConstraintViolation:
    """Classify `exc`; unknown shapes come back as kind "other", never raise."""
    cause = getattr(exc.orig, "__cause__", None)  # asyncpg's own exception behind the adapter
    code = _sqlstate(exc)
    if code is not None:
        kind = _PG_CODES.get(code, "other")
        detail = getattr(cause, "detail", None) or ""
        match = _PG_KEY.search(detail)
        column = getattr(cause, "column_name", None)
        if match:
            columns = tuple(c.strip() for c in match.group("cols").split(","))
        else:
            columns = (column,) if column else ()
        return ConstraintViolation(kind, columns, getattr(cause, "constraint_name", None))
    found = _SQLITE.search(str(exc.orig))
    if found is None:
        return ConstraintViolation("other")
    names = [n.strip() for n in found.group(2).split(",") if n.strip()]
    kind = _SQLITE_KINDS[found.group(1)]
    if kind == "check":
        return ConstraintViolation(kind, (), names[0] if names else None)
    return ConstraintViolation(kind, tuple(n.rsplit(".", 1)[-1] for n in names))
