"""The API contract check every service gets: schemathesis against the service's own OpenAPI.

`run_schemathesis(base_url, workdir)` runs the `st` command line against
`{base_url}/openapi.json` in a child process (its own interpreter, so nothing it imports or
patches leaks into the test run) and returns what it printed. The checks are the promises a
service makes to its clients:

- `not_a_server_error`: no input, however odd, gets a 5xx;
- `status_code_conformance`: every status a route answers is declared in the OpenAPI;
- `content_type_conformance`: the content type answered is the one declared;
- `response_schema_conformance`: bodies match the declared schemas (errors included).

The run is bounded and repeatable: deterministic generation (the same cases every run, no
example database carried between runs), a cap on examples per operation and a hard timeout,
so it fits CI on a small shared machine and a failure reproduces with the same command.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
PHASES = ("examples", "coverage", "fuzzing")
"""Stateful testing is left out: FastAPI declares no OpenAPI links to follow."""


@dataclass(frozen=True, slots=True)
class ContractRun:
    """What one schemathesis run did: its exit code, its report and how long it took."""

    command: tuple[str, ...]
    returncode: int
    output: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    @property
    def cases(self) -> int:
        """Test cases sent, as the summary counts them (0 when it printed none)."""
        found = re.search(r"Test cases:\s*(\d+) generated", self.output)
        return int(found.group(1)) if found else 0


def run_schemathesis(
    base_url: str,
    workdir: Path,
    *,
    headers: Mapping[str, str] | None = None,
    checks: Sequence[str] = CHECKS,
    phases: Sequence[str] = PHASES,
    max_examples: int = 80,
    request_timeout: float = 10,
    timeout: float = 240,
) -> ContractRun:
    """Run schemathesis against the service at `base_url`, with `headers` on every request
    (credentials for routes behind permissions). It runs in `workdir`, where it keeps its
    crash records (`st replay` there reruns a failure), never in the repository. `timeout`
    ends a run that hangs: it raises `subprocess.TimeoutExpired` rather than passing."""
    command = (
        sys.executable, "-m", "schemathesis.cli", "run", f"{base_url}/openapi.json",
        "--checks", ",".join(checks),
        "--phases", ",".join(phases),
        "--max-examples", str(max_examples),
        "--generation-deterministic",  # implies no example database between runs
        "--request-timeout", str(request_timeout),
        "--workers", "1",
        "--no-color",
        *(arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")),
    )
    started = time.monotonic()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return ContractRun(command, done.returncode, done.stdout + done.stderr,
                       time.monotonic() - started)
