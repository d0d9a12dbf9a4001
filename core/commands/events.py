"""`python -m core events check|snapshot`: the services' event contracts against the last
released snapshot (`contracts/events/<service>.json`); the rules are in event_contracts.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from core.commands.event_catalog import collect
from core.commands.event_contracts import (
    SNAPSHOT_DIR,
    check,
    current,
    read_snapshot,
    write_snapshot,
)

app = typer.Typer(help="Event contracts: check them against the released snapshot.",
                  no_args_is_help=True)

Root = Annotated[Path, typer.Option("--root", help="Repository root (holds services/).")]
Snapshots = Annotated[Path | None, typer.Option(
    "--snapshot", help=f"Snapshot directory; default: ROOT/{SNAPSHOT_DIR}.")]


@app.command("check")
def check_(root: Root = Path("."), snapshot: Snapshots = None) -> None:
    """Fail (exit 1) on a change that breaks a consumer without an upcaster, or on an
    event a service handles that no service publishes."""
    started = time.perf_counter()
    services = collect(root)
    problems = check(read_snapshot(snapshot or root / SNAPSHOT_DIR), services)
    for line in problems:
        typer.echo(line, err=True)
    count = sum(len(s.contracts) for s in services)
    took = time.perf_counter() - started
    if problems:
        typer.echo(f"events check: {len(problems)} problem(s) in {count} contracts of "
                   f"{len(services)} services ({took:.2f}s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"events check: {count} contracts of {len(services)} services compatible "
               f"({took:.2f}s)")


@app.command("snapshot")
def snapshot_(root: Root = Path("."), snapshot: Snapshots = None) -> None:
    """Write the snapshot from the code (what a release does): the new baseline."""
    for file in write_snapshot(snapshot or root / SNAPSHOT_DIR, current(collect(root))):
        typer.echo(f"wrote {file}")
