"""The failed-login throttle behind the gateway, when the gateway is not on loopback.

In a container deployment the gateway reaches the auth service from its own network address,
not 127.0.0.1. Here a relay plays that network: the gateway finds auth at the relay (auth
advertises it as SERVICE_URL), and the relay connects to auth from 127.0.0.2. Auth trusts
only that address's X-Forwarded-For (FORWARDED_ALLOW_IPS, as the Dockerfile sets it for the
container networks), not loopback. Clients reach the gateway from addresses of their own.
One client's bad logins must lock out that client, not everyone behind the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from devinfra.kafka import KafkaBroker
from devinfra.stack import Stack
from devinfra.stack.specs import SERVICES
from tests.e2e.system import PASSWORD
from tests.helpers import unique

GATEWAY_SIDE = "127.0.0.2"
"""Where the gateway's connections to auth come from (the gateway's network, here)."""
ATTACKER, VICTIM = "127.0.0.3", "127.0.0.4"
THROTTLE = {"CLIENT_SLOW_AFTER": "3", "CLIENT_LOCK_AFTER": "5", "LOGIN_SLOW_SECONDS": "1",
            "LOGIN_LOCK_SECONDS": "120", "ACCOUNT_SLOW_AFTER": "100",
            "ACCOUNT_LOCK_AFTER": "100"}


class Relay:
    """Accepts connections on loopback and opens each one onward to `target` from `source`."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.target: tuple[str, int] | None = None
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.target is not None
        try:
            up_reader, up_writer = await asyncio.open_connection(
                *self.target, local_addr=(self.source, 0))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(kafka: KafkaBroker, tmp_path: Path) -> AsyncIterator[str]:
    relay = Relay(GATEWAY_SIDE)
    relay_port = await relay.start()
    auth = dataclasses.replace(SERVICES[0], env={
        **THROTTLE, "FORWARDED_ALLOW_IPS": GATEWAY_SIDE,
        "SERVICE_URL": f"http://127.0.0.1:{relay_port}"})
    gateway = next(s for s in SERVICES if s.name == "gateway")
    prefix = unique("addr").replace("-", "_") + "_"
    stack = Stack([auth, gateway], state_dir=tmp_path, base_port=0, kafka=kafka,
                  prefix=prefix, admin_email=None, ready_timeout=90, stop_timeout=15,
                  env={"REGISTRY_TOPIC": f"{prefix}platform.registry"})
    relay.target = ("127.0.0.1", stack.ports["auth"])
    try:
        # In a thread: the gateway reaches auth through the relay, which runs on this loop.
        await asyncio.to_thread(stack.start)
        yield stack.url("gateway")
    finally:
        await asyncio.to_thread(stack.close)
        relay.close()


def client_at(address: str, base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=20,
                             transport=httpx.AsyncHTTPTransport(local_address=address))


@pytest.mark.asyncio(loop_scope="session")
async def test_one_clients_bad_logins_do_not_lock_out_another(gateway: str) -> None:
    email = f"{unique('victim')}@example.com"
    async with client_at(VICTIM, gateway) as victim, client_at(ATTACKER, gateway) as attacker:
        made = await victim.post("/api/auth/register", json={"email": email,
                                                            "password": PASSWORD})
        assert made.status_code == 201, made.text
        answers = []
        for _ in range(8):  # each a different account: the per-client count is what rises
            bad = await attacker.post("/api/auth/login", json={
                "email": f"{unique('guess')}@example.com", "password": "wrong-password-1"})
            answers.append(bad.status_code)
        assert 429 in answers, f"the attacker's own address is throttled: {answers}"
        good = await victim.post("/api/auth/login", json={"email": email,
                                                         "password": PASSWORD})
        assert good.status_code == 200, (good.status_code, good.text, answers)
        again = await attacker.post("/api/auth/login", json={"email": email,
                                                            "password": PASSWORD})
        assert again.status_code == 429, "still locked: the right password does not unlock"
