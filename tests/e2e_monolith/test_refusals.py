"""The one-process runner refuses what it cannot do, before anything starts, and a service
that fails to start ends the process with its reason instead of leaving it hanging."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devinfra.process import free_port
from devinfra.stack import Stack, StackError
from devinfra.stack.specs import ROOT


def run_plan(tmp_path: Path, plan: dict[str, object]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return subprocess.run([sys.executable, "-m", "devinfra.stack.inprocess", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_stack_refuses_the_memory_bus_before_starting_a_broker(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="BUS=memory is not available") as refused:
        Stack(state_dir=tmp_path, mode="monolith", bus="memory")
    assert "consumer groups" in str(refused.value)  # says what is missing
    assert not (tmp_path / "kafka").exists()
    with pytest.raises(StackError, match="one of kafka, memory"):
        Stack(state_dir=tmp_path, mode="monolith", bus="rabbit")


def test_the_runner_refuses_the_memory_bus_with_exit_2(tmp_path: Path) -> None:
    done = run_plan(tmp_path, {"bus": "memory", "waves": []})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "BUS=memory is not available" in done.stdout


def test_a_service_that_cannot_start_ends_the_process_with_its_reason(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "sqlite+aiosqlite:////proc/no-such-dir/auth.db",
           "JWT_KEYS_DIR": str(tmp_path / "keys"), "SERVICE_HOST": "127.0.0.1",
           "SERVICE_PORT": str(free_port()), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    started = time.monotonic()
    done = run_plan(tmp_path, {"bus": "kafka", "ready_timeout": 60, "waves": [[{
        "name": "auth", "module": "services.auth", "port": int(env["SERVICE_PORT"]),
        "env": env}]]})
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 30, "it gave up at once, not after the ready timeout"
    assert "auth stopped before it was ready" in done.stdout
    assert "unable to open database file" in done.stdout  # the reason, in its own lines
