"""What only the one-process mode promises: every service listens in the one process, each
log line names its service, one service cannot be restarted alone, and a SIGTERM stops the
gateway, then the services, then auth, each through its lifespan, and the process exits 0.

The stopping test closes the stack, so it is this package's last (files and tests run in
order: test_flows, then this module top to bottom)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from devinfra.stack import StackError
from devinfra.stack.monolith import MonolithMember
from tests.e2e.system import System

SERVICES = ("auth", "user", "driver", "notification", "order")


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on `port` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.add(inode)
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def lines(system: System) -> list[dict[str, Any]]:
    assert system.stack.monolith is not None
    return [json.loads(line) for line in system.stack.monolith.log.read_text().splitlines()
            if line.startswith("{")]


def test_every_service_and_the_gateway_listen_in_the_one_process(system: System) -> None:
    monolith = system.stack.monolith
    assert monolith is not None and monolith.running
    pid = monolith.process.pid
    assert pid is not None
    owned = socket_inodes(pid)
    for name, port in system.stack.ports.items():
        member = system.stack.processes[name]
        assert isinstance(member, MonolithMember) and member.owner is monolith
        listening = listening_inodes(port)
        assert listening, f"nothing listens on {name}'s port {port}"
        assert listening <= owned, f"{name}'s port {port} is not the monolith's (pid {pid})"


def test_each_log_line_names_the_service_it_comes_from(system: System) -> None:
    logged = lines(system)
    for name in SERVICES:
        [started] = [d for d in logged if d["message"].startswith(f"{name} started (")]
        assert started["service"] == name, started
    [gateway] = [d for d in logged if d["message"].startswith("gateway ready:")]
    assert gateway["service"] == "gateway", gateway
    # Requests too: each service's uvicorn task and what it starts inherit its name.
    assert {d.get("service") for d in logged} >= {*SERVICES, "gateway"}


def test_one_service_cannot_be_restarted_alone(system: System) -> None:
    with pytest.raises(StackError, match="one process"):
        system.stack.restart("driver")


async def test_sigterm_stops_the_gateway_then_the_services_then_auth(system: System) -> None:
    monolith = system.stack.monolith
    assert monolith is not None
    await asyncio.to_thread(system.stack.close)

    if monolith.process.returncode != 0:  # the lines that say why, however early they were
        said = [line for line in monolith.log.read_text().splitlines()
                if '"level": "error"' in line or '"level": "critical"' in line
                or not line.startswith("{")]
        pytest.fail(f"exit {monolith.process.returncode}:\n" + "\n".join(said[-40:]))
    messages = [d["message"] for d in lines(system)]

    def at(message: str) -> int:
        assert message in messages, f"no {message!r} in the log"
        return messages.index(message)

    gateway = at("stopping gateway")
    middle = at("stopping user, driver, notification, order")
    auth = at("stopping auth")
    assert gateway < middle < auth
    for name in ("user", "driver", "notification", "order"):
        assert middle < at(f"{name} stopped") < auth
    assert auth < at("auth stopped")
