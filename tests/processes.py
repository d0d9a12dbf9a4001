"""Processes for the tests: a service, an issuer or a stand-in as its own `python -m MODULE`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]


class Spawner:
    """Starts `python -m MODULE ARGS` (with `env` added to the environment) from the repository
    root, and stops what it started at `close()`. A process's stdout is a pipe for the test to
    read, or, for a chatty process that nobody reads while it runs, the file `output` (a pipe
    nobody drains fills up and stalls the process)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.files: list[IO[str]] = []

    def __call__(self, module: str, *args: str, env: dict[str, str] | None = None,
                 output: Path | None = None) -> subprocess.Popen[str]:
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
        stdout: IO[str] | int = subprocess.PIPE
        if output is not None:
            stdout = output.open("w")
            self.files.append(stdout)
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                                stdout=stdout, stderr=None if output is None else stdout,
                                text=True)
        self.procs.append(proc)
        return proc

    def close(self, *, grace: float = 0) -> None:
        """Stop the processes still running: SIGTERM and up to `grace` seconds to drain
        (when `grace` is given), then SIGKILL."""
        for proc in self.procs:
            if proc.poll() is None and grace:
                proc.terminate()
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for file in self.files:
            file.close()
