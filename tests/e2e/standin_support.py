"""Helpers for the tests of `devinfra.stack` with stand-in services."""

from __future__ import annotations

import io
import os
from pathlib import Path

from rich.console import Console


def recording_console() -> tuple[Console, io.StringIO]:
    """A console writing plain text to a buffer, as the stack's output would reach a file."""
    buffer = io.StringIO()
    return Console(file=buffer, width=200, force_terminal=False, highlight=False,
                   soft_wrap=True), buffer


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line or environment contains `marker` (a test's own
    temporary path): what a stack that stopped cleanly must not leave behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in blob and alive(int(entry.name)):
            found.append(int(entry.name))
    return found
