"""The driver service over HTTP, as a real process beside real Kafka: onboarding (with the user
service's answer), permissions, the status machine, locations by HTTP and by Kafka into the
read model, the nearby query, and the live stream. The user-service-down case runs last: it
stops the stand-in and leaves the breaker open. Its OpenAPI contract: test_contract.py."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.driver.tests.conftest import (
    ADMIN_PERMISSIONS,
    USER_PERMISSIONS,
    DriverStack,
    driver_body,
    start_user_standin,
)
from tests.helpers import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


# --- onboarding -------------------------------------------------------------------------------


async def test_register_needs_a_valid_token_with_the_permission(stack: DriverStack) -> None:
    async with await stack.client() as anonymous:
        assert (await anonymous.post("/drivers", json=driver_body())).status_code == 401
        forged = {"Authorization": "Bearer not.a.token"}
        assert (await anonymous.post("/drivers", json=driver_body(),
                                     headers=forged)).status_code == 401
    async with await stack.client("reader", ["drivers:read"]) as reader:
        refused = await reader.post("/drivers", json=driver_body())
        assert refused.status_code == 403
        assert "drivers:register" in refused.json()["error"]["message"]


async def test_onboarding_checks_the_profile_with_the_callers_token(stack: DriverStack) -> None:
    user_id = str(uuid.uuid4())
    async with await stack.client(user_id) as http:
        missing = await http.post("/drivers", json=driver_body())
        assert missing.status_code == 422, missing.text
        assert "register a profile first" in missing.json()["error"]["message"]
        async with httpx.AsyncClient() as raw:
            seen = (await raw.get(f"{stack.user_url}/_seen")).json()
        asked = [s for s in seen if s["user_id"] == user_id]
        assert asked and asked[-1]["authorization"] == f"Bearer {await stack.token(user_id)}"

        await stack.add_profile(user_id)
        created = await http.post("/drivers", json=driver_body())
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["user_id"] == user_id and body["status"] == "offline"
        assert body["vehicle"]["plate"] == "AB 123 CD"

        again = await http.post("/drivers", json=driver_body())
        assert again.status_code == 409
        assert "already a driver" in again.json()["error"]["message"]
        mine = await http.get("/drivers/me")
        assert mine.status_code == 200 and mine.json()["id"] == body["id"]


@pytest.mark.parametrize(("override", "field"), [
    ({"licence_expiry": "2020-01-01"}, "licence_expiry"),
    ({"licence_expiry": datetime.now(UTC).date().isoformat()}, "licence_expiry"),
    ({"licence_number": "dl 12"}, "licence_number"),
    ({"vehicle": {"make": "VW", "model": "Golf", "plate": "X1", "colour": "red", "year": 1970}},
     "vehicle.year"),
    ({"vehicle": {"make": " ", "model": "Golf", "plate": "X1", "colour": "red", "year": 2020}},
     "vehicle.make"),
    ({"extra": 1}, "extra"),
])
async def test_bad_onboarding_input_is_a_422_naming_the_field(
        stack: DriverStack, override: dict[str, Any], field: str) -> None:
    user_id = str(uuid.uuid4())
    await stack.add_profile(user_id)
    async with await stack.client(user_id) as http:
        refused = await http.post("/drivers", json=driver_body(**override))
    assert refused.status_code == 422, refused.text
    assert field in {f["field"] for f in refused.json()["error"]["fields"]}


async def test_a_licence_number_is_one_drivers(stack: DriverStack) -> None:
    body = driver_body()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for user_id in (first, second):
        await stack.add_profile(user_id)
    async with await stack.client(first) as http:
        assert (await http.post("/drivers", json=body)).status_code == 201
    async with await stack.client(second) as http:
        assert (await http.post("/drivers", json=body)).status_code == 409


async def test_a_licence_number_is_shown_to_the_driver_and_drivers_write_only(
        stack: DriverStack) -> None:
    user_id, driver_id = await stack.new_driver()
    async with await stack.client(user_id) as own:
        number = (await own.get(f"/drivers/{driver_id}")).json()["licence_number"]
        assert number and number.startswith("DL-")
        assert (await own.get("/drivers/me")).json()["licence_number"] == number
        changed = await own.put(f"/drivers/{driver_id}/status", json={"status": "available"})
        assert changed.json()["licence_number"] == number
    async with await stack.client(str(uuid.uuid4())) as rider:  # drivers:read
        seen = await rider.get(f"/drivers/{driver_id}")
        assert seen.status_code == 200 and seen.json()["licence_number"] is None
        assert seen.json()["vehicle"]["plate"] == "AB 123 CD"
    async with await stack.client("admin", ADMIN_PERMISSIONS) as admin:
        assert (await admin.get(f"/drivers/{driver_id}")).json()["licence_number"] == number


# --- status and who may steer ---------------------------------------------------------------


async def test_illegal_transitions_are_409_naming_the_allowed_ones(stack: DriverStack) -> None:
    user_id, driver_id = await stack.new_driver()
    async with await stack.client(user_id) as http:
        url = f"/drivers/{driver_id}/status"
        busy = await http.put(url, json={"status": "busy"})
        assert busy.status_code == 409
        assert "allowed statuses are: available" in busy.json()["error"]["message"]
        assert (await http.put(url, json={"status": "available"})).status_code == 200
        assert (await http.put(url, json={"status": "available"})).status_code == 200  # same
        assert (await http.put(url, json={"status": "busy"})).status_code == 200
        offline = await http.put(url, json={"status": "offline"})
        assert offline.status_code == 409
        assert "allowed statuses are: available" in offline.json()["error"]["message"]
        assert (await http.put(url, json={"status": "asleep"})).status_code == 422
        assert (await http.get(f"/drivers/{driver_id}")).json()["status"] == "busy"


async def test_only_the_driver_or_drivers_write_steers_a_driver(stack: DriverStack) -> None:
    user_id, driver_id = await stack.new_driver()
    service = await stack.service.token(user_id, *USER_PERMISSIONS, kind="service")
    async with stack.client_with(service) as as_user:  # a service client named as the user
        status = await as_user.put(f"/drivers/{driver_id}/status", json={"status": "available"})
        location = await as_user.put(f"/drivers/{driver_id}/location", json={"lat": 1, "lon": 1})
        mine = await as_user.get("/drivers/me")
        assert (status.status_code, location.status_code, mine.status_code) == (403, 403, 403)
    async with await stack.client(str(uuid.uuid4())) as other:
        status = await other.put(f"/drivers/{driver_id}/status", json={"status": "available"})
        location = await other.put(f"/drivers/{driver_id}/location", json={"lat": 1, "lon": 1})
        assert (status.status_code, location.status_code) == (403, 403)
        assert (await other.get(f"/drivers/{driver_id}")).status_code == 200  # may read
        missing = await other.put(f"/drivers/{uuid.uuid4()}/status", json={"status": "busy"})
        assert missing.status_code == 404
    async with await stack.client("admin", ADMIN_PERMISSIONS) as admin:
        moved = await admin.put(f"/drivers/{driver_id}/status", json={"status": "available"})
        assert moved.status_code == 200 and moved.json()["status"] == "available"
        placed = await admin.put(f"/drivers/{driver_id}/location", json={"lat": 1, "lon": 1})
        assert placed.status_code == 200
    async with await stack.client("nobody", []) as powerless:
        assert (await powerless.get(f"/drivers/{driver_id}")).status_code == 403
    async with await stack.client() as anonymous:
        assert (await anonymous.put(f"/drivers/{driver_id}/location",
                                    json={"lat": 1, "lon": 1})).status_code == 401


# --- locations and nearby ---------------------------------------------------------------------


async def test_available_drivers_appear_nearby_nearest_first(stack: DriverStack) -> None:
    lat, lon = -33.8688, 151.2093  # a spot of our own: other tests place drivers elsewhere
    near, far, busy, offline = [await stack.new_driver(status=s) for s in
                                ("available", "available", "busy", "offline")]
    for (user_id, driver_id), (dlat, dlon) in zip(
            (far, near, busy, offline), ((0.03, 0.0), (0.0, 0.005), (0.0, 0.001), (0.001, 0.0)),
            strict=True):
        async with await stack.client(user_id) as http:
            placed = await http.put(f"/drivers/{driver_id}/location",
                                    json={"lat": lat + dlat, "lon": lon + dlon})
            assert placed.status_code == 200 and placed.json()["applied"], placed.text
    async with await stack.client("rider") as rider:
        found = await rider.get("/drivers/nearby",
                                params={"lat": lat, "lon": lon, "radius_km": 5})
        assert found.status_code == 200, found.text
        items = found.json()["items"]
        assert [i["driver_id"] for i in items] == [near[1], far[1]]
        assert items[0]["distance_km"] == pytest.approx(0.462, abs=0.01)
        assert items[1]["distance_km"] == pytest.approx(3.336, abs=0.01)
        narrow = await rider.get("/drivers/nearby", params={"lat": lat, "lon": lon,
                                                            "radius_km": 1})
        assert [i["driver_id"] for i in narrow.json()["items"]] == [near[1]]

        async with await stack.client(near[0]) as driver:
            off = await driver.put(f"/drivers/{near[1]}/status", json={"status": "offline"})
            assert off.status_code == 200
        after = await rider.get("/drivers/nearby", params={"lat": lat, "lon": lon,
                                                           "radius_km": 5})
        assert [i["driver_id"] for i in after.json()["items"]] == [far[1]]


async def test_nearby_finds_a_driver_just_across_a_cell_border(stack: DriverStack) -> None:
    # Latitude 45.0 is a border between geohash cells of every precision: the rider is just
    # south of it, the driver 20 m north, in another cell.
    user_id, driver_id = await stack.new_driver(status="available")
    async with await stack.client(user_id) as http:
        placed = await http.put(f"/drivers/{driver_id}/location",
                                json={"lat": 45.00009, "lon": 7.00001})
        assert placed.json()["cell"][:5] != "u0j2h"  # not the rider's cell
    async with await stack.client("rider") as rider:
        found = await rider.get("/drivers/nearby",
                                params={"lat": 44.99991, "lon": 7.00001, "radius_km": 0.05})
        assert [i["driver_id"] for i in found.json()["items"]] == [driver_id]


async def test_nearby_across_the_antimeridian(stack: DriverStack) -> None:
    user_id, driver_id = await stack.new_driver(status="available")
    async with await stack.client(user_id) as http:
        await http.put(f"/drivers/{driver_id}/location", json={"lat": -16.5, "lon": -179.995})
    async with await stack.client("rider") as rider:
        found = await rider.get("/drivers/nearby",
                                params={"lat": -16.5, "lon": 179.995, "radius_km": 2})
        assert [i["driver_id"] for i in found.json()["items"]] == [driver_id]
        polar = await rider.get("/drivers/nearby",
                                params={"lat": 90, "lon": 0, "radius_km": 50})
        assert polar.status_code == 200


@pytest.mark.parametrize("params", [
    {"lat": 0, "lon": 0, "radius_km": 51},
    {"lat": 0, "lon": 0, "radius_km": 0},
    {"lat": 91, "lon": 0},
    {"lat": 0, "lon": 181},
    {"lon": 0},
    {"lat": 0, "lon": 0, "limit": 0},
])
async def test_nearby_refuses_bad_queries(stack: DriverStack, params: dict[str, Any]) -> None:
    async with await stack.client("rider") as rider:
        assert (await rider.get("/drivers/nearby", params=params)).status_code == 422
    async with await stack.client("nobody", []) as powerless:
        assert (await powerless.get("/drivers/nearby",
                                    params={"lat": 0, "lon": 0})).status_code == 403


async def test_an_older_location_never_replaces_a_newer_one(stack: DriverStack) -> None:
    user_id, driver_id = await stack.new_driver()
    now = datetime.now(UTC)
    async with await stack.client(user_id) as http:
        url = f"/drivers/{driver_id}/location"
        newer = await http.put(url, json={"lat": 10, "lon": 10, "recorded_at": now.isoformat()})
        assert newer.json()["applied"] is True
        older = await http.put(url, json={"lat": 11, "lon": 11,
                                          "recorded_at": (now - timedelta(seconds=5)).isoformat()})
        assert older.status_code == 200 and older.json()["applied"] is False
        assert (older.json()["lat"], older.json()["lon"]) == (10, 10)

        await stack.publish_location(driver_id, 12, 12, now - timedelta(seconds=1))  # Kafka
        await stack.publish_location(driver_id, 13, 13, now + timedelta(seconds=1))

        async def latest() -> bool:
            stored = (await http.get(f"/drivers/{driver_id}/location")).json()
            return (stored["lat"], stored["lon"]) == (13, 13)

        await eventually(latest, timeout=20.0, interval=0.1)
        future = await http.put(url, json={
            "lat": 1, "lon": 1, "recorded_at": (now + timedelta(minutes=5)).isoformat()})
        assert future.status_code == 422
        naive = await http.put(url, json={"lat": 1, "lon": 1,
                                          "recorded_at": "2026-01-01T00:00:00"})
        assert naive.status_code == 422
        for bad in ({"lat": 90.5, "lon": 0}, {"lat": 0, "lon": -180.1}, {"lat": "x", "lon": 0}):
            assert (await http.put(url, json=bad)).status_code == 422


async def test_locations_published_straight_to_kafka_land_in_the_read_model(
        stack: DriverStack) -> None:
    _, driver_id = await stack.new_driver(status="available")
    ghost = str(uuid.uuid4())
    await stack.publish_location(ghost, 1, 1)  # no such driver: ignored, not a failure
    await stack.publish_location(driver_id, 48.8566, 2.3522)
    async with await stack.client("rider") as rider:

        async def nearby() -> list[str]:
            found = await rider.get("/drivers/nearby",
                                    params={"lat": 48.8566, "lon": 2.3522, "radius_km": 1})
            return [i["driver_id"] for i in found.json()["items"]]

        assert await eventually(nearby, timeout=20.0, interval=0.1) == [driver_id]
        assert (await rider.get(f"/drivers/{ghost}/location")).status_code == 404


# --- the live stream --------------------------------------------------------------------------


class Stream:
    """An open SSE response, read event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 15) -> dict[str, str]:
        """The next event or comment, as its fields (a comment is {"comment": text})."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if not line:
                    if fields:
                        return fields
                    continue
                name, _, value = line.partition(":")
                fields[name or "comment"] = value.strip()
        raise AssertionError("the stream ended")


async def test_the_stream_sends_locations_from_http_and_from_kafka(stack: DriverStack) -> None:
    user_id, driver_id = await stack.new_driver(status="available")
    async with await stack.client(user_id) as driver:
        await driver.put(f"/drivers/{driver_id}/location", json={"lat": 50.0, "lon": 8.0})
    async with await stack.client("rider") as rider, rider.stream(
            "GET", f"/drivers/{driver_id}/locations/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        assert (await stream.next())["comment"] == "subscribed"
        first = await stream.next()
        assert first["event"] == "location" and json.loads(first["data"])["lat"] == 50.0

        async with await stack.client(user_id) as driver:
            moved = await driver.put(f"/drivers/{driver_id}/location",
                                     json={"lat": 50.001, "lon": 8.0})
            assert moved.status_code == 200
        by_http = json.loads((await stream.next())["data"])
        assert (by_http["driver_id"], by_http["lat"]) == (driver_id, 50.001)

        await stack.publish_location(driver_id, 50.002, 8.0)
        by_kafka = json.loads((await stream.next())["data"])
        assert by_kafka["lat"] == 50.002

        await stack.publish_location(driver_id, 49.0, 8.0, datetime.now(UTC) - timedelta(1))
        await stack.publish_location(driver_id, 50.003, 8.0)
        assert json.loads((await stream.next())["data"])["lat"] == 50.003  # the old one skipped


async def test_the_stream_refuses_the_unknown_and_the_unauthorised(stack: DriverStack) -> None:
    _, driver_id = await stack.new_driver()
    async with await stack.client("rider") as rider:
        assert (await rider.get(f"/drivers/{uuid.uuid4()}/locations/stream")).status_code == 404
    async with await stack.client("nobody", []) as powerless:
        assert (await powerless.get(f"/drivers/{driver_id}/locations/stream")).status_code == 403
    async with await stack.client() as anonymous:
        assert (await anonymous.get(f"/drivers/{driver_id}/locations/stream")).status_code == 401


async def test_the_stream_ends_when_the_token_expires(stack: DriverStack) -> None:
    _, driver_id = await stack.new_driver()
    token = await stack.service.token("short-lived", "drivers:read", ttl=2)
    async with stack.service.client(timeout=15) as http:
        started = asyncio.get_running_loop().time()
        async with http.stream("GET", f"/drivers/{driver_id}/locations/stream",
                               headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status_code == 200
            stream = Stream(response)
            assert (await stream.next())["comment"] == "subscribed"
            with pytest.raises(AssertionError, match="the stream ended"):
                await stream.next(timeout=10)
        assert asyncio.get_running_loop().time() - started < 6


# --- the user service down (last: it stops the stand-in) -----------------------------------


async def test_onboarding_with_the_user_service_down_is_a_clear_503(stack: DriverStack) -> None:
    user_id = str(uuid.uuid4())
    await stack.add_profile(user_id)
    stack.user_proc.kill()
    stack.user_proc.wait()
    try:
        answers: list[httpx.Response] = []
        async with await stack.client(user_id) as http:
            while len(answers) < 30 and "Retry-After" not in (
                    answers[-1].headers if answers else {}):
                answers.append(await http.post("/drivers", json=driver_body()))
        assert {a.status_code for a in answers} == {503}
        assert answers[0].json()["error"]["message"] == "Service 'user' is unavailable"
        assert "Retry-After" in answers[-1].headers  # the breaker opened: failing fast
        async with await stack.client("rider") as rider:
            assert (await rider.get("/drivers/nearby",
                                    params={"lat": 0, "lon": 0})).status_code == 200
    finally:
        stack.user_proc = await start_user_standin(stack.spawn, stack.user_port)
    await stack.add_profile(user_id)  # the stand-in forgot its profiles

    async def onboards() -> bool:  # the user service back: the breaker lets calls through again
        async with await stack.client(user_id) as http:
            answer = await http.post("/drivers", json=driver_body())
            return answer.status_code == 201 or "already a driver" in answer.text

    await eventually(onboards, timeout=30, interval=0.5)


async def test_shutdown_ends_open_streams_and_exits_cleanly(stack: DriverStack) -> None:
    """Last of all: it stops the service. SIGTERM with a stream open: the stream ends and
    the process drains and exits well before uvicorn's 20 s grace for open connections."""
    _, driver_id = await stack.new_driver()
    async with await stack.client("rider") as rider, rider.stream(
            "GET", f"/drivers/{driver_id}/locations/stream") as response:
        stream = Stream(response)
        assert (await stream.next())["comment"] == "subscribed"
        started = asyncio.get_running_loop().time()
        stack.service.proc.send_signal(signal.SIGTERM)
        with pytest.raises((AssertionError, httpx.RemoteProtocolError)):
            await stream.next(timeout=10)  # the stream ends
    code = await asyncio.to_thread(stack.service.proc.wait, 15)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    assert asyncio.get_running_loop().time() - started < 10
    assert "driver stopped" in stack.service.log.read_text()
