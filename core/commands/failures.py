"""What a command says when the database or broker it was pointed at fails: one line on
standard error naming what went wrong and the setting to change, and exit status 1. Never a
traceback: an operator acts on a setting, not on a stack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError as SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

if TYPE_CHECKING:
    from core.config import KafkaConfig

DATABASE_SETTING = "DATABASE_URL (or --url)"
UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for a missing table


def fail(message: str) -> typer.Exit:
    """Print `error: message` on standard error; the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def first_line(exc: BaseException) -> str:
    """The driver's own message, first line only (SQLAlchemy appends the SQL and a link)."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(source).strip().splitlines()
    return f"{type(source).__name__}: {lines[0]}" if lines else type(source).__name__


def shown_url(url: str) -> str:
    """`url` without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def database_problem(exc: BaseException, url: str | None, service: str | None = None,
                     setting: str = DATABASE_SETTING) -> str | None:
    """One line for a failure to use the database at `url`, or None if `exc` is not one."""
    where = f"the database at {shown_url(url)}" if url else "the database"
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return (f"{shown_url(url) if url else 'the URL'} is not a database URL "
                f"({first_line(exc)}): set {setting}, e.g. to "
                "sqlite+aiosqlite:///./.local/NAME.db or postgresql+asyncpg://USER:PASSWORD@"
                "HOST/NAME")
    if isinstance(exc, DBAPIError) and _missing_table(exc):
        whose = f"the tables of {service}" if service else "the service's tables"
        return (f"{where} does not hold {whose} ({first_line(exc)}): set {setting} "
                f"to its database, or migrate this one first: python -m core migrate "
                f"{service or 'SERVICE'}")
    if isinstance(exc, DBAPIError | OSError | TimeoutError):
        return f"cannot use {where} ({first_line(exc)}): check {setting}"
    return None


@contextmanager
def database_failures(url: str | None, service: str | None = None,
                      setting: str = DATABASE_SETTING) -> Iterator[None]:
    """Turn a failure to use the database at `url` into `fail(...)`; anything else passes."""
    try:
        yield
    except Exception as exc:
        problem = database_problem(exc, url, service, setting)
        if problem is None:
            raise
        raise fail(problem) from exc


def settings_database_url() -> str:
    """DATABASE_URL from the settings, read now (not through `get_settings`' process-wide
    cache: a command reads the environment it runs in, also when run in-process twice);
    invalid settings are a one-line error."""
    from core.config import Settings

    try:
        return Settings().database_url
    except SettingsError as exc:
        raise fail(f"invalid settings: {settings_errors(exc)}") from exc


def settings_kafka() -> KafkaConfig:
    """The Kafka settings, read now (as `settings_database_url`); invalid settings are a
    one-line error."""
    from core.config import Settings

    try:
        return Settings().kafka()
    except SettingsError as exc:
        raise fail(f"invalid settings: {settings_errors(exc)}") from exc


def settings_errors(exc: SettingsError) -> str:
    """One line naming each bad variable; a default left unbuilt because the field it derives
    from failed (pydantic's `default_factory_not_called`) only echoes that failure, so it is
    left out."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])).upper() or 'settings'}: {e['msg']}"
                     for e in exc.errors() if e["type"] != "default_factory_not_called")


def _missing_table(exc: DBAPIError) -> bool:
    text = str(exc.orig)
    return (getattr(exc.orig, "sqlstate", None) == UNDEFINED_TABLE
            or text.startswith("no such table")
            or ("relation" in text and "does not exist" in text))
