"""Drivers end to end: a user becomes a driver, goes online, streams locations and shows up in
the nearby query nearest first; offline, they disappear; nobody else moves them; the SSE
stream delivers their moves (services/README.md, driver paths and permissions)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

from tests.e2e.system import Account, System, eventually, ident, items, onboarding, unwrap

KM_PER_DEGREE_LAT = 111.2
ONLINE, OFFLINE = "available", "offline"


async def become_driver(system: System) -> tuple[Account, str]:
    account = await system.user(with_profile=True)  # the driver service checks the profile
    body = onboarding()
    async with system.http("driver", account.access_token) as http:
        response = await http.post("/drivers", json=body)
        assert response.status_code == 201, f"{body} -> {response.text}"
        driver = unwrap(response.json())
        assert driver["user_id"] == account.id
        twice = await http.post("/drivers", json=onboarding())
        assert twice.status_code == 409, f"a second driver record: {twice.text}"
    return account, ident(driver, "driver_id")


async def put(system: System, token: str, driver_id: str, what: str, body: dict[str, Any],
              expect: tuple[int, ...] = (200, 204)) -> None:
    async with system.http("driver", token) as http:
        response = await http.put(f"/drivers/{driver_id}/{what}", json=body)
    assert response.status_code in expect, f"PUT {what} {body}: {response.text}"


async def nearby(system: System, token: str, lat: float, lon: float,
                 radius_km: float) -> list[str]:
    async with system.http("driver", token) as http:
        response = await http.get("/drivers/nearby", params={"lat": lat, "lon": lon,
                                                             "radius_km": radius_km})
    assert response.status_code == 200, response.text
    return [ident(item, "driver_id") for item in items(response.json())]


def somewhere() -> tuple[float, float]:
    """A random spot, so tests (and earlier runs) do not share a neighbourhood."""
    return random.uniform(-50, 50), random.uniform(-150, 150)


async def test_online_drivers_appear_nearest_first_and_offline_ones_disappear(
        system: System) -> None:
    lat, lon = somewhere()
    drivers = [await become_driver(system) for _ in range(4)]
    distances_km = [3.0, 1.0, 6.0, 40.0]  # the last one is outside the 10 km radius
    for (account, driver_id), km in zip(drivers, distances_km, strict=True):
        await put(system, account.access_token, driver_id, "status", {"status": ONLINE})
        # A short stream of positions, ending `km` north of the centre.
        for step in (4, 2, 1):
            await put(system, account.access_token, driver_id, "location",
                      {"lat": lat + step * km / KM_PER_DEGREE_LAT, "lon": lon})
    ids = [driver_id for _, driver_id in drivers]
    expected = [ids[1], ids[0], ids[2]]
    token = drivers[0][0].access_token

    async def ours() -> list[str]:
        return [d for d in await nearby(system, token, lat, lon, 10) if d in ids]

    assert await eventually(lambda: _equals(ours, expected), timeout=30, interval=0.3)

    await put(system, drivers[0][0].access_token, ids[0], "status", {"status": OFFLINE})
    assert await eventually(lambda: _equals(ours, [ids[1], ids[2]]), timeout=30, interval=0.3)


async def _equals(fetch: Any, expected: list[str]) -> bool:
    return bool(await fetch() == expected)


async def test_only_the_driver_or_an_admin_moves_a_driver(
        system: System) -> None:
    owner, driver_id = await become_driver(system)
    other = await system.user()
    lat, lon = somewhere()
    await put(system, other.access_token, driver_id, "location", {"lat": lat, "lon": lon},
              expect=(403,))
    await put(system, other.access_token, driver_id, "status", {"status": ONLINE},
              expect=(403,))
    async with system.http("driver") as anonymous:
        response = await anonymous.put(f"/drivers/{driver_id}/location",
                                       json={"lat": lat, "lon": lon})
        assert response.status_code == 401
    await put(system, owner.access_token, driver_id, "location", {"lat": 91.0, "lon": lon},
              expect=(422,))
    await put(system, owner.access_token, driver_id, "location", {"lat": lat},
              expect=(422,))
    admin = await system.admin_account()
    await put(system, admin.access_token, driver_id, "status", {"status": ONLINE})
    await put(system, admin.access_token, driver_id, "location", {"lat": lat, "lon": lon})
    async with system.http("driver", other.access_token) as http:
        seen = await http.get(f"/drivers/{driver_id}")
    assert seen.status_code == 200  # drivers:read: anyone may look
    assert ident(unwrap(seen.json()), "driver_id") == driver_id


async def test_the_location_stream_delivers_the_drivers_moves(
        system: System) -> None:
    account, driver_id = await become_driver(system)
    await put(system, account.access_token, driver_id, "status",
              {"status": ONLINE})
    lat, lon = somewhere()
    received: list[dict[str, Any]] = []
    opened = asyncio.Event()

    async def listen() -> None:
        async with system.http("driver", account.access_token) as http, \
                http.stream("GET", f"/drivers/{driver_id}/locations/stream",
                            timeout=None) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            opened.set()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    payload = line[len("data:"):].strip()
                    if payload.startswith("{"):
                        received.append(json.loads(payload))

    task = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(opened.wait(), timeout=15)

        def moved_to(target: float) -> bool:
            return any(abs(float(unwrap(e).get("lat", 999)) - target) < 1e-6 for e in received)

        # Moves made after the stream opened must reach it (a subscription may need a moment
        # to start, so keep moving until one arrives, then check a later one arrives too).
        async def move_seen(target: float) -> bool:
            await put(system, account.access_token, driver_id, "location",
                      {"lat": target, "lon": lon})
            await asyncio.sleep(0.5)
            return moved_to(target)

        await eventually(lambda: move_seen(lat), timeout=20, interval=0.2)
        assert await eventually(lambda: move_seen(lat + 0.01), timeout=10, interval=0.2)
        event = next(e for e in received if abs(float(unwrap(e)["lat"]) - lat - 0.01) < 1e-6)
        assert abs(float(unwrap(event)["lon"]) - lon) < 1e-6
        assert not task.done(), "the stream ended"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async with system.http("driver") as anonymous:
        refused = await anonymous.get(f"/drivers/{driver_id}/locations/stream")
    assert refused.status_code == 401
