"""The one-process runner refuses what it cannot do (a bus its members cannot share) before
anything starts, and a service that fails to start ends the run with its reason instead of
leaving the others hanging (each run here in the test's own process: a subprocess would spend
seconds importing the same)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from devinfra.process import free_port
from devinfra.stack import Stack, StackError
from devinfra.stack.inprocess import START_FAILED, Member, Monolith, main
from devinfra.stack.monolith import MEMORY_BUS


def test_the_memory_bus_starts_no_broker_and_is_refused_outside_one_process(
        tmp_path: Path) -> None:
    stack = Stack(state_dir=tmp_path, mode="monolith", bus="memory")
    assert stack.bootstrap_servers == MEMORY_BUS  # every service's KAFKA_BOOTSTRAP_SERVERS
    assert stack.service_env(stack.services[0])["KAFKA_BOOTSTRAP_SERVERS"] == MEMORY_BUS
    assert not (tmp_path / "kafka").exists()
    with pytest.raises(StackError, match="BUS=memory needs MODE=monolith"):
        Stack(state_dir=tmp_path, bus="memory")  # processes cannot share a process's broker
    with pytest.raises(StackError, match="runs no Kafka"):
        Stack(state_dir=tmp_path, mode="monolith", bus="memory", kafka="127.0.0.1:9092")
    with pytest.raises(StackError, match="one of kafka, memory"):
        Stack(state_dir=tmp_path, mode="monolith", bus="rabbit")


@pytest.mark.parametrize(("bus", "reason"), [
    ("memory", "BUS=memory, but auth would not use it"),
    ("rabbit", "BUS=rabbit: one of kafka, memory"),
])
def test_the_runner_refuses_a_bus_its_members_cannot_share_with_exit_2(
        bus: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"bus": bus, "waves": [[{
        "name": "auth", "module": "services.auth", "port": 1,
        "env": {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}}]]}))
    assert main([str(plan)]) == 2
    assert reason in capsys.readouterr().err


async def test_a_service_that_cannot_start_ends_the_run_with_its_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    env = {"DATABASE_URL": "sqlite+aiosqlite:////proc/no-such-dir/auth.db",
           "JWT_KEYS_DIR": str(tmp_path / "keys"), "SERVICE_HOST": "127.0.0.1",
           "SERVICE_PORT": str(port), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    monolith = Monolith([[Member("auth", "services.auth", port, env)]], ready_timeout=60)
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        assert await monolith.run(signals=False) == START_FAILED
    assert time.monotonic() - started < 30, "it gave up at once, not after the ready timeout"
    assert "auth stopped before it was ready" in caplog.text
    assert "unable to open database file" in caplog.text  # the reason, in its own lines
    assert "stopping auth" in caplog.text
