"""Now by the database's clock, as SQL: what delivery claims, leases and retries are stamped
and judged by, so instances on hosts whose clocks disagree still agree on who holds a claim.

PostgreSQL's `now()` is the server's; SQLite's `'now'` is the clock of the one host its file
lives on, read by SQLite itself, rendered in the text form SQLAlchemy stores datetimes in
(`YYYY-MM-DD HH:MM:SS.ffffff`, UTC) so stored values and the clock compare as text.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import String, func, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from core.db import UtcDateTime


def db_now(dialect: str, plus: float = 0.0) -> ColumnElement[datetime]:
    """The clock of the database of `dialect` (`Database.dialect`), `plus` seconds on (a
    lease's end, a retry's due time)."""
    if dialect == "postgresql":
        now = func.now() + timedelta(seconds=plus) if plus else func.now()
        return type_coerce(now, UtcDateTime())
    # %f is seconds with milliseconds: padded to the microseconds SQLAlchemy writes
    stamp = func.strftime("%Y-%m-%d %H:%M:%f", "now", f"{plus:+.6f} seconds", type_=String)
    return type_coerce(stamp.concat("000"), UtcDateTime())
