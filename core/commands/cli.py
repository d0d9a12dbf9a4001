"""The `python -m core` command line; each command group lives in its own module."""

from __future__ import annotations

import typer

from core.commands import (
    create_service,
    dlq,
    events,
    migrate,
    outbox,
    projections,
    sagas,
    traces,
)

app = typer.Typer(help="Tools for services built on core.", no_args_is_help=True)
app.add_typer(dlq.app, name="dlq")
app.add_typer(outbox.app, name="outbox")
app.add_typer(sagas.app, name="sagas")
app.add_typer(projections.app, name="projections")
app.add_typer(traces.app, name="traces")
app.add_typer(events.app, name="events")
app.add_typer(migrate.app)  # top-level: migrate, makemigrations, downgrade, showmigrations
app.add_typer(create_service.app)  # top-level: create-service, update-service
