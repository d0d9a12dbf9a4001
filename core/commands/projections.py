"""`python -m core projections list|rebuild SERVICE`: a service's read models.

SERVICE is found as the migration commands find it (a directory, a name under `services/`, or
a dotted package); its projections are every `Projection` in `<package>.projections` unless
`--projections` names another module. The database is `--url`, else DATABASE_URL; the broker
KAFKA_BOOTSTRAP_SERVERS. `rebuild` replays the projection's topics from the beginning into
fresh tables and swaps them in with their positions (core.projections.rebuild); the running
service keeps serving the old rows until the swap and reads on from the new positions.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.commands.failures import (
    database_failures,
    fail,
    first_line,
    settings_database_url,
    settings_kafka,
)
from core.config import KafkaConfig
from core.db import migrations
from core.db.engine import Database
from core.projections import Projection, ProjectionError, rebuild
from core.projections import positions as stored
from core.projections.rebuild import RebuildReport

app = typer.Typer(help="Projections (read models): their positions and lag; rebuild one.",
                  no_args_is_help=True)
console = Console()

Service = Annotated[str, typer.Argument(
    help="Service directory, name under services/, or dotted package.")]
Url = Annotated[str | None, typer.Option(
    "--url", help="Database URL; default: DATABASE_URL from the settings.")]
Module = Annotated[str | None, typer.Option(
    "--projections", help="Module declaring them (default: <package>.projections).")]


@app.command("list")
def list_(service: Service, url: Url = None, module: Module = None,
          as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")]
          = False) -> None:
    """SERVICE's projections: stored position and lag per topic partition."""
    found = _projections(service, module)
    url = url or settings_database_url()
    config = settings_kafka()
    with database_failures(url, service):
        rows = asyncio.run(_positions(found, url, config))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(found)} projection(s) of {service}")
    for column in ("projection", "topic", "partition", "next offset", "end", "lag"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["projection"]), str(row["topic"]), str(row["partition"]),
                      "-" if row["next_offset"] is None else str(row["next_offset"]),
                      "?" if row["end"] is None else str(row["end"]),
                      "?" if row["lag"] is None else str(row["lag"]))
    console.print(table)


@app.command("rebuild")
def rebuild_(service: Service, name: Annotated[str, typer.Argument(help="The projection.")],
             url: Url = None, module: Module = None) -> None:
    """Replay projection NAME from the beginning into fresh tables, then swap them in."""
    found = {p.name: p for p in _projections(service, module)}
    projection = found.get(name)
    if projection is None:
        raise fail(f"{service} has no projection {name!r} (it has: "
                   f"{', '.join(sorted(found)) or 'none'})")
    url = url or settings_database_url()
    config = settings_kafka()
    with database_failures(url, service):
        try:
            report = asyncio.run(_rebuild(projection, url, config))
        except ProjectionError as exc:
            raise fail(str(exc)) from exc
    console.print(f"rebuilt {name}: {report.applied} event(s) applied, {report.skipped} "
                  f"skipped, in {report.seconds:.1f}s; positions "
                  + ", ".join(f"{t}/{p}={o}" for (t, p), o in sorted(report.positions.items())))


async def _rebuild(projection: Projection, url: str, config: KafkaConfig) -> RebuildReport:
    db = Database(url)
    try:
        return await rebuild(projection, db, config)
    finally:
        await db.dispose()


async def _positions(found: list[Projection], url: str,
                     config: KafkaConfig) -> list[dict[str, object]]:
    from core.messaging.kafka_client import GroupInspector

    db = Database(url)
    inspector = GroupInspector(config, f"{config.client_id}-projections")
    rows: list[dict[str, object]] = []
    try:
        for projection in found:
            table = stored.declared_positions(projection.metadata)
            async with db.session() as session:
                at = await stored.load(session, table, projection.name)
            try:
                ends = await inspector.ends(projection.topics)
            except Exception as exc:  # the broker away: positions still tell something
                typer.echo(f"warning: no partition ends from Kafka ({first_line(exc)})",
                           err=True)
                ends = {}
            for where in sorted(set(at) | set(ends)):
                end, offset = ends.get(where), at.get(where)
                rows.append({"projection": projection.name, "topic": where[0],
                             "partition": where[1], "next_offset": offset, "end": end,
                             "lag": None if end is None else max(0, end - (offset or 0))})
    finally:
        await inspector.close()
        await db.dispose()
    return rows


def _projections(service: str, module: str | None) -> list[Projection]:
    try:
        found = migrations.locate(service)
    except migrations.MigrationError as exc:
        raise typer.BadParameter(str(exc), param_hint="SERVICE") from exc
    name = module or (f"{found.package}.projections" if found.package else "projections")
    try:
        loaded = importlib.import_module(name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {name}: {exc}",
                                 param_hint="--projections") from exc
    projections = [v for v in vars(loaded).values() if isinstance(v, Projection)]
    if not projections:
        raise typer.BadParameter(f"{name} declares no Projection", param_hint="--projections")
    return sorted(projections, key=lambda p: p.name)

