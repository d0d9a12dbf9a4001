"""A service SIGKILLed in the middle of a load of registrations: once it is back, nothing that
was acknowledged is lost and nothing happened twice. Killing auth tests its outbox (a
registration's event committed but not yet sent goes out after the restart); killing the user
service tests its consumer and inbox (each registration ends with exactly one profile)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.databases import rows_mentioning
from tests.e2e.system import PASSWORD, Account, System, eventually, unwrap
from tests.helpers import unique

USERS = 24
CONCURRENCY = 4


async def _register_all(system: System, crash: asyncio.Event, after: int) -> list[Account]:
    """Register USERS users, a few at a time; set `crash` once `after` are acknowledged.
    Returns the acknowledged ones (a request cut off by the crash is not acknowledged)."""
    acknowledged: list[Account] = []
    run = unique("crash")  # not id(crash): CPython reuses a freed object's id
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(USERS):
        queue.put_nowait(i)

    async def worker() -> None:
        async with system.http("auth") as http:
            while not queue.empty():
                i = queue.get_nowait()
                email = f"{run}-{system.stack.prefix}{i}@example.com"
                try:
                    response = await http.post("/auth/register",
                                               json={"email": email, "password": PASSWORD})
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
                    continue  # not acknowledged: the client would retry, we just move on
                if response.status_code == 201:
                    acknowledged.append(Account(str(unwrap(response.json())["id"]), email,
                                                PASSWORD))
                    if len(acknowledged) >= after:
                        crash.set()
                else:
                    assert response.status_code in (502, 503), response.text  # no 500s
                await asyncio.sleep(0.05)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return acknowledged


@pytest.mark.parametrize("victim", ["user", "auth"])
async def test_nothing_acknowledged_is_lost_when_a_service_is_killed_mid_load(
        system: System, victim: str) -> None:
    crash = asyncio.Event()
    load = asyncio.create_task(_register_all(system, crash, after=USERS // 4))
    crashing = asyncio.create_task(crash.wait())
    await asyncio.wait({load, crashing}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    crashing.cancel()
    if not crash.is_set():  # the load failed or ran out: say why, not just "timed out"
        if load.done():
            acknowledged = load.result()  # re-raises the load's own error, if it had one
        else:
            load.cancel()
            acknowledged = []
        pytest.fail(f"{len(acknowledged)} of the {USERS // 4} registrations due before the "
                    "crash were acknowledged")
    system.stack.kill(victim)
    await asyncio.sleep(1.0)  # registrations go on (or fail, for auth) while it is down
    await system.restart(victim)
    acknowledged = await asyncio.wait_for(load, timeout=120)
    assert len(acknowledged) >= USERS // 4

    admin = await system.admin_account()
    async with system.http("user", admin.access_token) as http:
        async def all_profiles() -> bool:
            for account in acknowledged:
                response = await http.get(f"/users/{account.id}")
                assert response.status_code in (200, 404), response.text
                if response.status_code == 404:
                    return False
            return True

        await eventually(all_profiles, timeout=90, interval=1.0)

    for account in acknowledged:  # exactly one profile each: no duplicate from a redelivery
        rows = await rows_mentioning(system.database_url("user"), account.id, own_only=True)
        assert sum(len(r) for r in rows.values()) == 1, (account.id, rows)
    sample = acknowledged[-1]  # and the account itself survived: it logs in
    await system.login(sample)
