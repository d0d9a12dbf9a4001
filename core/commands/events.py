"""`python -m core events check|snapshot|docs`: the services' event contracts against the last
released snapshot (`contracts/events/<service>.json`; the rules are in event_contracts.py),
and their AsyncAPI document (event_docs.py)."""

from __future__ import annotations

import json
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
from core.commands.event_docs import merged

app = typer.Typer(help="Event contracts: check them against the released snapshot; the "
                       "AsyncAPI document.",
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


DEFAULT_DOCS = Path("reports/asyncapi.json")


@app.command("docs")
def docs_(root: Root = Path("."), out: Annotated[Path, typer.Option(
        "--out", help="Where to write the merged document ('-': standard output).")] = DEFAULT_DOCS,
          title: Annotated[str, typer.Option(help="The document's title.")] = "Events",
          version: Annotated[str, typer.Option(help="The document's version.")] = "") -> None:
    """Write the services' merged AsyncAPI 3.0 document (what the gateway serves at
    /asyncapi.json), then validate it: exit 1 when it is not valid AsyncAPI 3.0 or a $ref
    resolves to nothing."""
    from core.asyncapi.validation import problems  # a development dependency (jsonschema)

    started = time.perf_counter()
    document = merged(root, title=title, version=version)
    text = json.dumps(document, indent=2) + "\n"
    if str(out) == "-":
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    found = problems(document)
    for line in found:
        typer.echo(line, err=True)
    summary = (f"{len(document['channels'])} channels, {len(document['operations'])} "
               f"operations, {len(document['components'].get('messages', {}))} messages")
    took = time.perf_counter() - started
    if found:
        typer.echo(f"events docs: {out} is not valid AsyncAPI 3.0 ({len(found)} problem(s); "
                   f"{summary}; {took:.2f}s)", err=True)
        raise typer.Exit(1)
    where = "standard output" if str(out) == "-" else out
    typer.echo(f"events docs: wrote {where}: {summary}, valid ({took:.2f}s)",
               err=str(out) == "-")
