"""A process starter for module-scoped fixtures (the root `spawn` is per test): the
service, the token issuer and the stand-ins start once per module."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def module_spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Like the root `spawn`, but the processes live until the module ends."""
    procs: list[subprocess.Popen[str]] = []
    files: list[IO[str]] = []

    def start(module: str, *args: str, env: dict[str, str] | None = None,
              output: Path | None = None) -> subprocess.Popen[str]:
        stdout: IO[str] | int = subprocess.PIPE
        if output is not None:
            stdout = output.open("w")
            files.append(stdout)
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=ROOT, text=True, stdout=stdout,
            stderr=None if output is None else stdout,
            env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)})
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    for file in files:
        file.close()
