"""`python -m core migrate | makemigrations | downgrade | showmigrations SERVICE`.

SERVICE is a directory (`services/user`, `tests/sample_service`), a name under `services/`,
or a dotted package. The database is `--url`, else DATABASE_URL from the settings.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from alembic.script import Script
from rich.console import Console

from core.commands.failures import database_failures, settings_database_url
from core.db import migrations
from core.db.scaffold import init_migrations

app = typer.Typer(help="Per-service database migrations (Alembic).")
console = Console(soft_wrap=True)

Service = Annotated[str, typer.Argument(
    help="Service directory, name under services/, or dotted package.")]
Url = Annotated[str | None, typer.Option(
    "--url", help="Database URL; default: DATABASE_URL from the settings.")]
Sql = Annotated[bool, typer.Option("--sql", help="Print the SQL instead of running it.")]


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


def _url(url: str | None) -> str:
    return url or settings_database_url()


@app.command()
def migrate(
    service: Service,
    revision: Annotated[str, typer.Option("--revision", "-r", help="Target revision.")] = "head",
    url: Url = None,
    sql: Sql = False,
) -> None:
    """Upgrade SERVICE's database to REVISION (default: head); idempotent."""
    try:
        if sql:
            typer.echo(migrations.sql_script(service, _url(url), revision))
            return
        found = migrations.locate(service)
        with database_failures(_url(url)):
            asyncio.run(migrations.upgrade(found, url, revision))
            now = asyncio.run(migrations.current(found, url))
    except migrations.MigrationError as exc:
        raise _fail(exc) from exc
    console.print(f"{found.name}: at {', '.join(now) or 'base'} ({found.version_table})")


@app.command()
def downgrade(
    service: Service,
    revision: Annotated[str, typer.Option(
        "--revision", "-r", help="Target revision: an id, -1 (one step back) or base.")],
    url: Url = None,
    sql: Sql = False,
) -> None:
    """Downgrade SERVICE's database to REVISION."""
    try:
        if sql:
            typer.echo(migrations.sql_script(service, _url(url), revision, "downgrade"))
            return
        found = migrations.locate(service)
        with database_failures(_url(url)):
            asyncio.run(migrations.downgrade(found, revision, url))
            now = asyncio.run(migrations.current(found, url))
    except migrations.MigrationError as exc:
        raise _fail(exc) from exc
    console.print(f"{found.name}: at {', '.join(now) or 'base'}")


@app.command()
def makemigrations(
    service: Service,
    message: Annotated[str, typer.Option("--message", "-m", help="What the revision does.")]
    = "auto",
    empty: Annotated[bool, typer.Option(
        "--empty", help="Write a blank revision (data migrations).")] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 if the models have unmigrated changes.")]
    = False,
    url: Annotated[str | None, typer.Option(
        "--url", help="Compare against this database (at head) instead of a scratch one.")]
    = None,
    metadata: Annotated[str | None, typer.Option(
        help="On first use: 'module:Base.metadata' (default: <package>.models:Base.metadata)")]
    = None,
) -> None:
    """Autogenerate a revision from SERVICE's models (scaffolds migrations/ on first use)."""
    try:
        found = migrations.locate(service)
        if not (found.script_location / "env.py").is_file():
            folder = init_migrations(found, metadata)
            console.print(f"created {folder}")
        with database_failures(url, setting="--url"):
            if check:
                asyncio.run(migrations.check(found, url))
                console.print(f"{found.name}: no changes")
                return
            path = asyncio.run(migrations.make_migration(found, message, database=url,
                                                         autogenerate=not empty))
    except migrations.MigrationError as exc:
        raise _fail(exc) from exc
    if path is None:
        console.print(f"{found.name}: no changes detected")
    else:
        console.print(f"wrote {_relative(path)}")


@app.command()
def showmigrations(service: Service, url: Url = None) -> None:
    """List SERVICE's revisions, marking those the database has applied."""
    try:
        found = migrations.locate(service)
        scripts = migrations.history(found)
        with database_failures(_url(url)):
            applied = _applied(scripts, asyncio.run(migrations.current(found, url)))
    except migrations.MigrationError as exc:
        raise _fail(exc) from exc
    console.print(f"{found.name} ({found.version_table})")
    for script in scripts:
        mark = "[green][X][/green]" if script.revision in applied else "[ ]"
        console.print(f" {mark} {script.revision}  {script.doc}")


def _applied(scripts: list[Script], at: tuple[str, ...]) -> set[str]:
    """Every revision at or below the current heads."""
    by_id = {s.revision: s for s in scripts}
    seen: set[str] = set()
    todo = list(at)
    while todo:
        rev = todo.pop()
        if rev in seen or rev not in by_id:
            continue
        seen.add(rev)
        todo.extend(by_id[rev]._all_down_revisions)
    return seen


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
