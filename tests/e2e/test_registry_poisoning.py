"""The registry poisoned on the stack `make up` starts: an `auth` instance announced on the
stack's registry topic by a process without the stack's key (written with confluent-kafka, at
a loopback address, as a local attacker would) receives none of the logins through the
gateway; the real, signed auth instance answers every one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from confluent_kafka import Producer

from core.service_registry import Instance
from core.service_registry.records import encode
from devinfra.process import free_port
from gateway.tests.harness import Upstream
from tests.e2e.system import PASSWORD, System, eventually


async def test_a_rogue_auth_instance_gets_no_logins(system: System,
                                                    spawn: Callable[..., Any]) -> None:
    rogue = await Upstream("rogue-auth", free_port(), spawn).start()
    producer = Producer({"bootstrap.servers": system.bootstrap_servers})
    producer.produce(system.stack.env["REGISTRY_TOPIC"],
                     encode(Instance("auth", "rogue-auth-1", rogue.url)), "rogue-auth-1")
    assert producer.flush(10) == 0
    account = await system.register()
    log = system.stack.processes["gateway"].log
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=15.0) as gateway:
        async def login() -> httpx.Response:
            return await gateway.post("/api/auth/login",
                                      json={"email": account.email, "password": PASSWORD})

        async def read_it() -> bool:  # or, unprotected, sent it a login
            return ("REFUSED a record (unsigned): auth instance rogue-auth-1" in log.read_text()
                    or (await login()).headers.get("x-upstream") == "rogue-auth")
        await eventually(read_it, timeout=30, interval=0.2)
        answers = [await login() for _ in range(30)]
    assert [a.status_code for a in answers] == [200] * 30
    assert await rogue.seen() == [], "a login reached the rogue instance"
