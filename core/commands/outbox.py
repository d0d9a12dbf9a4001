"""`python -m core outbox parked|requeue|discard SERVICE`: events Kafka refused for good.

SERVICE is found as the migration commands find it (a directory, a name under `services/`, or
a dotted package); its tables are read from `<package>.models:Base.metadata` unless
`--metadata` names another, and the database is `--url`, else DATABASE_URL. A parked event
holds back the later events of its topic and key until it is requeued (and published) or
discarded; `parked` shows how many each holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import MetaData

from core.commands.failures import database_failures, settings_database_url
from core.commands.service_metadata import service_metadata
from core.db.engine import Database
from core.messaging.outbox import store as outbox_store
from core.messaging.outbox.store import MAX_ATTEMPTS, OUTBOX

app = typer.Typer(help="Parked outbox events: list them with their errors, requeue or "
                       "discard them.", no_args_is_help=True)
console = Console()
T = TypeVar("T")

Service = Annotated[str, typer.Argument(
    help="Service directory, name under services/, or dotted package.")]
Url = Annotated[str | None, typer.Option(
    "--url", help="Database URL; default: DATABASE_URL from the settings.")]
MetadataPath = Annotated[str | None, typer.Option(
    "--metadata", help="'module:Base.metadata' (default: <package>.models:Base.metadata).")]
MaxAttempts = Annotated[int, typer.Option(
    "--max-attempts", min=1, help="The relay's max_attempts: refusals after which a row is "
                                  "parked.")]
Ids = Annotated[list[int] | None, typer.Option("--id", help="Outbox row id (repeatable).")]


@app.command()
def parked(service: Service, url: Url = None, metadata: MetadataPath = None,
           max_attempts: MaxAttempts = MAX_ATTEMPTS) -> None:
    """List SERVICE's parked events, oldest first, with the error and what each holds back."""
    tables = _metadata(service, metadata)
    rows = _run(service, url,
                lambda db: outbox_store.parked(db, tables, max_attempts=max_attempts))
    table = Table(title=f"{len(rows)} parked event(s)")
    for column in ("id", "created", "topic", "key", "event", "attempts", "holds back",
                   "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row.id), row.created_at.strftime("%Y-%m-%d %H:%M:%S"), row.topic,
                      row.key or "", f"{row.event_type} {row.event_id}", str(row.attempts),
                      str(row.held), row.last_error)
    console.print(table)


@app.command()
def requeue(service: Service, ids: Ids = None, all_: Annotated[bool, typer.Option(
                "--all", help="Requeue every parked event.")] = False,
            url: Url = None, metadata: MetadataPath = None,
            max_attempts: MaxAttempts = MAX_ATTEMPTS) -> None:
    """Send parked events again (fix the cause first: a missing topic, an ACL...)."""
    if bool(ids) == all_:
        raise typer.BadParameter("name the events with --id ID (repeatable), or pass --all",
                                 param_hint="--id / --all")
    tables = _metadata(service, metadata)
    count = _run(service, url, lambda db: outbox_store.requeue(
        db, tables, None if all_ else ids, max_attempts=max_attempts))
    console.print(f"requeued {count} parked event(s)")


@app.command()
def discard(service: Service, ids: Ids = None, url: Url = None,
            metadata: MetadataPath = None, max_attempts: MaxAttempts = MAX_ATTEMPTS) -> None:
    """Delete parked events for good, so the events they held back go out."""
    if not ids:
        raise typer.BadParameter("name the events to discard with --id ID (repeatable)",
                                 param_hint="--id")
    tables = _metadata(service, metadata)
    count = _run(service, url, lambda db: outbox_store.discard(
        db, tables, ids, max_attempts=max_attempts))
    console.print(f"discarded {count} parked event(s)")


def _metadata(service: str, spec: str | None) -> MetaData:
    """The service's MetaData, which must declare the outbox table."""
    return service_metadata(service, spec, table=OUTBOX, what="an outbox table")


def _run(service: str, url: str | None, action: Callable[[Database], Awaitable[T]]) -> T:
    """`action` on the database at `url` (else DATABASE_URL); a database that cannot be
    reached, or that is not SERVICE's, is a one-line error."""
    url = url or settings_database_url()

    async def run() -> T:
        db = Database(url)
        try:
            return await action(db)
        finally:
            await db.dispose()

    with database_failures(url, service):
        return asyncio.run(run())
