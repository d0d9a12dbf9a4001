"""`python -m core sagas list|show|retry SERVICE`: saga instances, for operators.

SERVICE is found as the migration commands find it; its tables are read from
`<package>.models:Base.metadata` unless `--metadata` names another, and the database is
`--url`, else DATABASE_URL. `retry` puts a `needs_attention` saga back to compensating, due
now: a running instance of the service sends the compensation again at its next sweep (the
command line has no saga definitions, so it sends nothing itself).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from core.commands.failures import database_failures, fail, settings_database_url
from core.commands.service_metadata import service_metadata
from core.db import Database
from core.saga.store import SagaRecord, SagaStore, StepEntry
from core.saga.tables import INSTANCES, STATUSES, SagaTables, saga_tables

app = typer.Typer(help="Saga instances: list them, show one with its history, retry one "
                       "that needs attention.", no_args_is_help=True)
console = Console()
T = TypeVar("T")

Service = Annotated[str, typer.Argument(
    help="Service directory, name under services/, or dotted package.")]
SagaId = Annotated[str, typer.Argument(help="The saga instance's id.")]
Url = Annotated[str | None, typer.Option(
    "--url", help="Database URL; default: DATABASE_URL from the settings.")]
MetadataPath = Annotated[str | None, typer.Option(
    "--metadata", help="'module:Base.metadata' (default: <package>.models:Base.metadata).")]


@app.command("list")
def list_(service: Service,
          status: Annotated[str | None, typer.Option(
              "--status", help=f"Only this status: {', '.join(STATUSES)}.")] = None,
          saga_type: Annotated[str | None, typer.Option("--type", help="Only this saga type.")
                               ] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
          url: Url = None, metadata: MetadataPath = None) -> None:
    """List SERVICE's saga instances, the newest first, with the counts per status."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"one of {', '.join(STATUSES)}", param_hint="--status")
    async def read(store: SagaStore) -> tuple[list[SagaRecord], dict[str, int]]:
        return (await store.find(status=status, saga_type=saga_type, limit=limit),
                await store.count())

    records, counts = _run(service, url, _tables(service, metadata), read)
    table = Table(title=f"{len(records)} saga(s); "
                        + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    for column in ("id", "type", "status", "step", "attempts", "updated", "last error"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(r.id, r.saga_type, r.status, str(r.step), str(r.attempts),
                      r.updated_at.strftime("%Y-%m-%d %H:%M:%S"), r.last_error or "")
    console.print(table)


@app.command()
def show(service: Service, saga_id: SagaId, url: Url = None,
         metadata: MetadataPath = None) -> None:
    """Show one saga: its state, data, last error and every transition with its time."""
    async def read(store: SagaStore) -> tuple[SagaRecord | None, list[StepEntry]]:
        return await store.load(saga_id), await store.history(saga_id)

    r, history = _run(service, url, _tables(service, metadata), read)
    if r is None:
        raise fail(f"no saga {saga_id}")
    console.print(f"saga {r.id} ({r.saga_type}): {r.status} at step {r.step}, "
                  f"attempts {r.attempts}, version {r.version}")
    console.print(f"last error: {r.last_error or '-'}")
    console.print(f"data: {json.dumps(r.data, sort_keys=True)}")
    table = Table(title="history")
    for column in ("at", "step", "event", "status", "detail"):
        table.add_column(column, overflow="fold")
    for h in history:
        table.add_row(h.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                      f"{h.step} {h.step_name}".strip(), h.event, h.status, h.detail or "")
    console.print(table)


@app.command()
def retry(service: Service, saga_id: SagaId, url: Url = None,
          metadata: MetadataPath = None) -> None:
    """Compensate a needs_attention saga again (fix the cause first); a running instance of
    SERVICE sends the compensation at its next sweep."""
    done = _run(service, url, _tables(service, metadata), lambda store: store.rearm(saga_id))
    if not done:
        raise fail(f"saga {saga_id} does not exist or does not need attention")
    console.print(f"saga {saga_id} will be compensated again at the next sweep")


def _tables(service: str, spec: str | None) -> SagaTables:
    """SERVICE's saga tables, from its metadata."""
    return saga_tables(service_metadata(service, spec, table=INSTANCES,
                                        what="the saga tables (saga_tables)"))


def _run(service: str, url: str | None, tables: SagaTables,
         action: Callable[[SagaStore], Awaitable[T]]) -> T:
    """`action` on SERVICE's saga tables at `url` (else DATABASE_URL); a database that cannot
    be reached, or is not SERVICE's, is a one-line error."""
    url = url or settings_database_url()

    async def run() -> T:
        db = Database(url)
        try:
            return await action(SagaStore(db, tables))
        finally:
            await db.dispose()

    with database_failures(url, service):
        return asyncio.run(run())
