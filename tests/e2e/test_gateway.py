"""The public API end to end through the gateway, started as `make up` starts it: a client that
knows one address registers, logs in, refreshes, finds its profile, becomes a driver, goes
online, reports where it is, is found nearby, streams its moves, reads its notifications and
logs out. And what the edge refuses, and the merged docs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from tests.e2e.system import PASSWORD, System, eventually, ident, items, onboarding, unwrap


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=15.0) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_public_api_through_the_gateway(gateway: httpx.AsyncClient) -> None:
    email = f"gw-{uuid.uuid4().hex[:12]}@example.com"
    registered = await gateway.post("/api/auth/register",
                                    json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    assert unwrap(registered.json())["email"] == email
    login = await gateway.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    pair = login.json()
    assert set(pair) >= {"access_token", "refresh_token", "token_type", "expires_in"}
    refreshed = await gateway.post("/api/auth/refresh",
                                   json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    tokens = refreshed.json()
    auth = bearer(tokens["access_token"])

    async def profile() -> dict[str, Any] | None:
        response = await gateway.get("/api/users/me", headers=auth)
        assert response.status_code in (200, 404), response.text
        return unwrap(response.json()) if response.status_code == 200 else None

    me = await eventually(profile, timeout=30, interval=0.2)
    assert me["email"] == email

    created = await gateway.post("/api/drivers", json=onboarding(), headers=auth)
    assert created.status_code == 201, created.text
    driver_id = ident(unwrap(created.json()), "driver_id")
    status = await gateway.put(f"/api/drivers/{driver_id}/status",
                               json={"status": "available"}, headers=auth)
    assert status.status_code in (200, 204), status.text
    lat, lon = random.uniform(-50, 50), random.uniform(-150, 150)
    moved = await gateway.put(f"/api/drivers/{driver_id}/location",
                              json={"lat": lat, "lon": lon}, headers=auth)
    assert moved.status_code in (200, 204), moved.text

    async def found() -> bool:
        response = await gateway.get("/api/drivers/nearby", headers=auth,
                                     params={"lat": lat, "lon": lon, "radius_km": 1})
        assert response.status_code == 200, response.text
        return driver_id in [ident(d, "driver_id") for d in items(response.json())]

    await eventually(found, timeout=30, interval=0.2)

    async def welcomed() -> list[dict[str, Any]]:
        response = await gateway.get("/api/notifications", headers=auth)
        assert response.status_code == 200, response.text
        return [n for n in items(response.json()) if n["kind"] == "welcome"]

    welcome = (await eventually(welcomed, timeout=30, interval=0.2))[0]
    read = await gateway.post(f"/api/notifications/{welcome['id']}/read", headers=auth)
    assert read.status_code in (200, 204), read.text

    logout = await gateway.post("/api/auth/logout",
                                json={"refresh_token": tokens["refresh_token"]}, headers=auth)
    assert logout.status_code == 204, logout.text
    again = await gateway.post("/api/auth/refresh",
                               json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 401


async def test_a_drivers_moves_stream_through_the_gateway(system: System,
                                                          gateway: httpx.AsyncClient) -> None:
    account = await system.user(with_profile=True)
    auth = bearer(account.access_token)
    created = await gateway.post("/api/drivers", json=onboarding(), headers=auth)
    driver_id = ident(unwrap(created.json()), "driver_id")
    await gateway.put(f"/api/drivers/{driver_id}/status", json={"status": "available"},
                      headers=auth)
    seen: list[dict[str, Any]] = []

    async def listen() -> None:
        async with gateway.stream("GET", f"/api/drivers/{driver_id}/locations/stream",
                                  headers=auth, timeout=None) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    return

    listening = asyncio.create_task(listen())
    try:
        async def delivered() -> bool:
            await gateway.put(f"/api/drivers/{driver_id}/location",
                              json={"lat": 10.0, "lon": 20.0}, headers=auth)
            return bool(seen)

        await eventually(delivered, timeout=30, interval=0.5)
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
    assert seen[0]["lat"] == 10.0 and seen[0]["lon"] == 20.0


async def test_the_edge_refuses_before_any_service(gateway: httpx.AsyncClient,
                                                   system: System) -> None:
    missing = await gateway.get("/api/users/me")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_token"
    forged = await gateway.get("/api/users/me", headers=bearer("e30.e30.c2ln"))
    assert forged.status_code == 401
    account = await system.user()
    admin_only = await gateway.get("/api/auth/roles", headers=bearer(account.access_token))
    assert admin_only.status_code == 403
    assert (await gateway.get("/api/nothing-here")).status_code == 404
    bad_path = await gateway.get("/api/users/..%2fauth/roles")
    assert bad_path.status_code == 400


async def test_one_openapi_document_for_the_whole_api(gateway: httpx.AsyncClient) -> None:
    document = (await gateway.get("/openapi.json")).json()
    paths = set(document["paths"])
    for path in ("/api/auth/register", "/api/auth/login", "/api/users/me", "/api/drivers",
                 "/api/drivers/nearby", "/api/notifications"):
        assert path in paths, sorted(paths)
    assert not document["info"].get("x-unavailable-services")
    docs = await gateway.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_one_asyncapi_document_for_every_service_s_events(
        gateway: httpx.AsyncClient) -> None:
    """Public like /openapi.json, merged from every running service's own, valid."""
    from core.asyncapi.validation import problems

    answer = await gateway.get("/asyncapi.json")
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert problems(document) == []
    assert not document["info"].get("x-unavailable-services")
    for channel in ("auth.events", "user.events", "user.requests", "driver.events",
                    "driver.commands", "order.events", "notification.events"):
        assert channel in document["channels"], sorted(document["channels"])
    assert {op.split(".", 1)[0] for op in document["operations"]} == {
        "auth", "driver", "notification", "order", "user"}
