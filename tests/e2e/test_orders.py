"""Orders end to end, through the gateway with every service its own process: the ride saga
reserves drivers over Kafka (order service -> driver.commands -> driver service ->
order.saga-replies), so of 30 orders racing for 10 drivers exactly 10 are confirmed and no
driver is reserved twice; with the driver service stopped the reserve step times out, and once
it is back no driver is left busy without a confirmed order (issue 21)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import httpx

from tests.e2e.system import Account, System, eventually, unwrap
from tests.e2e.test_drivers import KM_PER_DEGREE_LAT, become_driver, put, somewhere

FINAL = ("confirmed", "rejected", "cancelled", "completed")


def gateway(system: System, account: Account) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{system.url('gateway')}/api", headers=account.headers,
                             timeout=30.0)


async def available_drivers(system: System, n: int, lat: float, lon: float
                            ) -> list[tuple[Account, str]]:
    """`n` drivers, available within 2 km of (lat, lon)."""
    drivers = await asyncio.gather(*(become_driver(system) for _ in range(n)))
    for i, (account, driver_id) in enumerate(drivers):
        await put(system, account.access_token, driver_id, "status", {"status": "available"})
        await put(system, account.access_token, driver_id, "location",
                  {"lat": lat + (i % 5) * 0.4 / KM_PER_DEGREE_LAT, "lon": lon})
    return list(drivers)


async def place(system: System, passenger: Account, lat: float, lon: float) -> str:
    async with gateway(system, passenger) as http:
        response = await http.post("/orders", json={
            "pickup": {"lat": lat, "lon": lon}, "dropoff": {"lat": lat + 0.05, "lon": lon}})
    assert response.status_code == 202, response.text
    body = unwrap(response.json())
    assert body["status"] == "pending"
    return str(body["id"])


async def settled(system: System, passenger: Account, order_id: str,
                  timeout: float = 90) -> dict[str, Any]:
    async with gateway(system, passenger) as http:
        async def fetch() -> dict[str, Any] | None:
            response = await http.get(f"/orders/{order_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = unwrap(response.json())
            return body if body["status"] in FINAL else None

        found: dict[str, Any] = await eventually(fetch, timeout=timeout, interval=0.3)
    return found


async def driver_statuses(system: System, reader: Account, ids: list[str]) -> dict[str, str]:
    async with gateway(system, reader) as http:
        found = {}
        for driver_id in ids:
            response = await http.get(f"/drivers/{driver_id}")
            assert response.status_code == 200, response.text
            found[driver_id] = str(unwrap(response.json())["status"])
    return found


async def active_reservations(system: System, ids: list[str]) -> Counter[str]:
    """Active reservations per driver, as the driver service's own database holds them."""
    conn = await asyncpg.connect(system.database_url("driver").replace("+asyncpg", ""))
    try:
        rows = await conn.fetch("SELECT driver_id FROM driver_reservations WHERE "
                                "state = 'active' AND driver_id = ANY($1::uuid[])", ids)
    finally:
        await conn.close()
    return Counter(str(row["driver_id"]) for row in rows)


async def test_30_orders_for_10_drivers_confirm_exactly_10_and_share_no_driver(
        system: System) -> None:
    lat, lon = somewhere()
    drivers = await available_drivers(system, 10, lat, lon)
    ids = [driver_id for _, driver_id in drivers]
    passengers = await asyncio.gather(*(system.user() for _ in range(6)))
    plan = [passengers[i % len(passengers)] for i in range(30)]
    order_ids = await asyncio.gather(*(place(system, p, lat, lon) for p in plan))
    orders = await asyncio.gather(*(settled(system, p, o) for p, o in zip(plan, order_ids,
                                                                            strict=True)))

    counts = Counter(order["status"] for order in orders)
    assert counts == {"confirmed": 10, "rejected": 20}, counts
    confirmed = [order["driver_id"] for order in orders if order["status"] == "confirmed"]
    assert sorted(confirmed) == sorted(ids), "each driver confirmed for exactly one order"
    for order in orders:
        if order["status"] == "rejected":
            assert order["driver_id"] is None and "no available driver" in order["reason"]
    assert set((await driver_statuses(system, drivers[0][0], ids)).values()) == {"busy"}
    assert await active_reservations(system, ids) == Counter({i: 1 for i in ids})


async def test_with_the_driver_service_stopped_orders_end_with_a_reason_and_free_the_drivers(
        system: System) -> None:
    lat, lon = somewhere()
    drivers = await available_drivers(system, 3, lat, lon)
    ids = [driver_id for _, driver_id in drivers]
    passenger = await system.user()
    admin = await system.admin_account()
    driver = system.stack.processes["driver"]
    await asyncio.to_thread(driver.stop, system.stack.stop_timeout)
    try:
        order_ids = [await place(system, passenger, lat, lon) for _ in range(4)]

        async def timed_out(order_id: str) -> bool:
            async with gateway(system, admin) as http:
                saga = unwrap((await http.get(f"/sagas/{order_id}")).json())
            return any(h["event"] == "timed_out" for h in saga.get("history", []))

        for order_id in order_ids:  # the reserve step times out while the driver is away
            assert await eventually(lambda o=order_id: timed_out(o), timeout=60, interval=0.5)
    finally:
        await system.restart("driver")

    orders = [await settled(system, passenger, o, timeout=120) for o in order_ids]
    for order in orders:
        assert order["status"] in ("rejected", "cancelled"), order
        assert "no reply within" in order["reason"], order
    # The driver service, back, ran the queued reserves and then their releases.
    assert await eventually(
        lambda: _all_available(system, drivers[0][0], ids), timeout=60, interval=0.5)
    assert await active_reservations(system, ids) == Counter()


async def _all_available(system: System, reader: Account, ids: list[str]) -> bool:
    return set((await driver_statuses(system, reader, ids)).values()) == {"available"}
