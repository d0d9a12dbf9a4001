"""Run the framework's command line in-process."""

from __future__ import annotations

import asyncio

from click.testing import Result
from typer.testing import CliRunner

from core.commands.cli import app


async def cli(*args: str) -> Result:
    """`python -m core ARGS`, in-process (a worker thread: the commands run their own loop).
    A wide terminal, so table cells are not folded."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args),
                                   env={"COLUMNS": "250"})
