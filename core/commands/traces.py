"""`python -m core traces show TRACE_ID`: one trace's spans, as a tree, from the JSON-lines
files the services write (`OTEL_TRACES_FILE`; `--file` for others, repeatable)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from core.tracing import read_spans
from core.tracing.show import trace_tree

app = typer.Typer(help="Traces written to JSON-lines files (OTEL_TRACES_FILE).",
                  no_args_is_help=True)
console = Console()

Files = Annotated[list[str] | None, typer.Option(
    "--file", help="A JSON-lines span file (repeatable); default: OTEL_TRACES_FILE.")]


@app.command()
def show(trace_id: Annotated[str, typer.Argument(help="32 hex digits.")],
         file: Files = None) -> None:
    """Print the spans of TRACE_ID as a tree (parent above child)."""
    paths = file or ([os.environ["OTEL_TRACES_FILE"]] if os.environ.get("OTEL_TRACES_FILE")
                     else [])
    if not paths:
        console.print("[red]no span file: pass --file or set OTEL_TRACES_FILE[/]")
        raise typer.Exit(2)
    spans = read_spans(paths, trace_id)
    if not spans:
        console.print(f"[red]no spans of trace {trace_id} in {', '.join(paths)}[/]")
        raise typer.Exit(1)
    console.print(trace_tree(spans))
