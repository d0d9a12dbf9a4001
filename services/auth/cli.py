"""`python -m services.auth.cli ...`: the auth service's commands.

    create-admin --email E [--password-stdin]   the first admin (or make a user one)
    rotate-keys [--alg ES256]                   a new signing key; the old ones retire later
    create-client NAME --permission users:read  a service identity (id and secret printed once)

They use the same settings as the service (DATABASE_URL, JWT_KEYS_DIR, ...). In development
they migrate the database first, as the service does at start-up; elsewhere they refuse a
database behind the code. Running instances see a rotation at their next key reload.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import typer
from pydantic import ValidationError as SettingsError

from core.bases import AppError
from core.commands import database_failures, fail, settings_errors
from core.db import Database, migrations
from core.messaging import EventSerializer, OutboxWriter
from core.security import SIGNING_ALGORITHMS, FileKeyStore, KeyManager
from services.auth.config import AuthSettings
from services.auth.events import registry
from services.auth.main import SERVICE_DIR, passwords_from
from services.auth.models import Base
from services.auth.passwords import generate_password, normalise_email
from services.auth.rules.accounts import Accounts
from services.auth.rules.clients import Clients
from services.auth.rules.rbac import ADMIN_ROLE, Rbac
from services.auth.schemas import NAME_PATTERN, PERMISSION_PATTERN

app = typer.Typer(help="Commands of the auth service.", no_args_is_help=True,
                  add_completion=False)


def _settings() -> AuthSettings:
    try:
        return AuthSettings()
    except SettingsError as e:
        typer.echo(f"error: invalid settings: {settings_errors(e)}", err=True)
        raise typer.Exit(2) from e


@asynccontextmanager
async def _database(cfg: AuthSettings) -> AsyncIterator[Database]:
    database = Database(cfg.database_url)
    try:
        if cfg.environment == "development":
            await migrations.upgrade(SERVICE_DIR, database)
        elif set(await migrations.current(SERVICE_DIR, database)) != set(
                migrations.heads(SERVICE_DIR)):
            raise fail(f"the database is not at head: run `python -m core migrate "
                       f"{SERVICE_DIR}`")
        yield database
    finally:
        await database.dispose()


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option("--email", help="The admin's email.")],
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from standard input (first line).")]
    = False,
) -> None:
    """Create the admin user, or give an existing user the admin role. Without
    --password-stdin a strong random password is made and printed, once."""
    cfg = _settings()
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    try:
        with database_failures(cfg.database_url, "auth", "DATABASE_URL"):
            asyncio.run(_create_admin(cfg, email, password))
    except AppError as e:
        typer.echo(f"error: {_reasons(e)}", err=True)
        raise typer.Exit(1) from e


async def _create_admin(cfg: AuthSettings, email: str, password: str | None) -> None:
    async with _database(cfg) as database:
        outbox = OutboxWriter(Base.metadata,
                              EventSerializer(registry(), service_name=cfg.service_name))
        async with database.transaction() as session:
            accounts = Accounts(session, outbox, passwords_from(cfg))
            user = await accounts.by_email(normalise_email(email))
            if user is None:
                chosen = password or generate_password()
                user, _ = await accounts.register(email, chosen, roles=("user", ADMIN_ROLE))
                shown = chosen if password is None else "(as given on standard input)"
                typer.echo("created admin")
            else:
                await Rbac(session, outbox).assign(user.id, ADMIN_ROLE)
                shown = "(unchanged: the user existed)"
                typer.echo("existing user given the admin role")
    typer.echo(f"id: {user.id}")
    typer.echo(f"email: {user.email}")
    typer.echo(f"password: {shown}")


@app.command("rotate-keys")
def rotate_keys(
    alg: Annotated[str | None, typer.Option(
        "--alg", help=f"One of {', '.join(SIGNING_ALGORITHMS)}; default JWT_SIGNING_ALGORITHM.")]
    = None,
) -> None:
    """Make a new signing key in JWT_KEYS_DIR. The previous ones keep verifying until the
    longest token signed with them has expired, then are pruned."""
    cfg = _settings()
    if alg is not None and alg not in SIGNING_ALGORITHMS:
        typer.echo(f"error: --alg must be one of {', '.join(SIGNING_ALGORITHMS)}", err=True)
        raise typer.Exit(2)
    try:
        key = asyncio.run(_rotate(cfg, alg))
    except OSError as e:
        raise fail(f"cannot keep keys in {cfg.jwt_keys_dir} ({type(e).__name__}: {e}): set "
                   "JWT_KEYS_DIR to a directory this user may write") from e
    typer.echo(f"kid: {key}")


async def _rotate(cfg: AuthSettings, alg: str | None) -> str:
    keys = await KeyManager.open(FileKeyStore(cfg.jwt_keys_dir),
                                 alg=cfg.jwt_signing_algorithm,
                                 max_token_ttl=cfg.max_token_ttl,
                                 leeway=cfg.jwt_leeway_seconds)
    return (await keys.rotate(alg)).kid


@app.command("create-client")
def create_client(
    name: Annotated[str, typer.Argument(help="The client id, e.g. driver.")],
    permission: Annotated[list[str] | None, typer.Option(
        "--permission", "-p", help="A resource:action it may do; repeat for more.")] = None,
) -> None:
    """Create a service identity for client credentials; prints its id and secret, once."""

    cfg = _settings()
    bad = [p for p in permission or [] if not re.match(PERMISSION_PATTERN, p)]
    if not re.match(NAME_PATTERN, name) or bad:
        typer.echo(f"error: a name is [a-z][a-z0-9_-]{{1,63}}, a permission resource:action"
                   f"{'; refused: ' + ', '.join(bad) if bad else ''}", err=True)
        raise typer.Exit(2)
    try:
        with database_failures(cfg.database_url, "auth", "DATABASE_URL"):
            created = asyncio.run(_create_client(cfg, name, permission or []))
    except AppError as e:
        typer.echo(f"error: {_reasons(e)}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"client_id: {created[0]}")
    typer.echo(f"client_secret: {created[1]}")


async def _create_client(cfg: AuthSettings, name: str,
                         permissions: list[str]) -> tuple[str, str]:
    async with _database(cfg) as database, database.transaction() as session:
        created = await Clients(session).create(name, permissions)
    return created.client_id, created.client_secret


def _reasons(error: AppError) -> str:
    if not error.fields:
        return error.message
    return "; ".join(f"{f.field}: {f.reason}" for f in error.fields)


if __name__ == "__main__":
    app()
