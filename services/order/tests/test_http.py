"""The order service's HTTP API as a process, with the real driver service answering the
ride saga over Kafka: an order is confirmed with the nearest driver, rejected when none is
near, cancelled by its passenger (the driver released), completed by its driver (the driver
available again); only its passenger, its driver or an admin sees it; the read models follow;
operators see the sagas."""

from __future__ import annotations

import uuid

import pytest

from services.order.tests.conftest import (
    ADMIN_PERMISSIONS,
    KM_PER_DEGREE_LAT,
    OrderStack,
    order_body,
    somewhere,
)
from tests.helpers import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_order_is_confirmed_with_the_nearest_driver_and_completed_by_it(
        stack: OrderStack) -> None:
    lat, lon = somewhere()
    far_user, far = await stack.available_driver(lat + 3 / KM_PER_DEGREE_LAT, lon)
    near_user, near = await stack.available_driver(lat + 1 / KM_PER_DEGREE_LAT, lon)
    passenger = str(uuid.uuid4())
    placed = await stack.place(passenger, lat, lon)
    assert placed["status"] == "pending"
    assert [h["status"] for h in placed["history"]] == ["pending"]

    order = await stack.settled(passenger, placed["id"])
    assert order["status"] == "confirmed", order
    assert order["driver_id"] == near and order["reason"] is None
    assert [h["status"] for h in order["history"]] == ["pending", "driver_reserved",
                                                       "confirmed"]
    assert await stack.driver_status(near) == "busy"
    assert await stack.driver_status(far) == "available"

    # Its driver reads it; the passenger cannot complete it; the driver does.
    assert (await stack.get(near_user, placed["id"])).status_code == 200
    async with await stack.orders(passenger) as http:
        refused = await http.post(f"/orders/{placed['id']}/complete")
    assert refused.status_code == 404, refused.text
    async with await stack.orders(near_user) as http:
        done = await http.post(f"/orders/{placed['id']}/complete")
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "completed"
        again = await http.post(f"/orders/{placed['id']}/complete")
        assert again.status_code == 409, again.text
    assert await eventually(lambda: _status_is(stack, near, "available"), timeout=30)
    async with await stack.orders(passenger) as http:
        late = await http.post(f"/orders/{placed['id']}/cancel")
    assert late.status_code == 409, late.text

    # The read models follow the stream: the passenger's history, the driver's trips.
    async def listed(sub: str, path: str) -> bool:
        async with await stack.orders(sub) as http:
            rows = (await http.get(path)).json()["data"]
        return [(r["id"], r["status"]) for r in rows] == [(placed["id"], "completed")]

    assert await eventually(lambda: listed(passenger, "/orders"), timeout=30)
    assert await eventually(lambda: listed(near_user, "/orders/trips"), timeout=30)
    async with await stack.orders(far_user) as http:
        assert (await http.get("/orders/trips")).json()["data"] == []


async def _status_is(stack: OrderStack, driver_id: str, status: str) -> bool:
    return await stack.driver_status(driver_id) == status


async def test_no_driver_near_the_pickup_rejects_the_order_with_the_reason(
        stack: OrderStack) -> None:
    lat, lon = somewhere()
    _, far = await stack.available_driver(lat + 20 / KM_PER_DEGREE_LAT, lon)
    passenger = str(uuid.uuid4())
    placed = await stack.place(passenger, lat, lon)
    order = await stack.settled(passenger, placed["id"])
    assert order["status"] == "rejected", order
    assert order["driver_id"] is None
    assert "no available driver within 5 km" in order["reason"], order
    assert await stack.driver_status(far) == "available"


async def test_the_passenger_cancels_a_confirmed_order_and_the_driver_is_released(
        stack: OrderStack) -> None:
    lat, lon = somewhere()
    _, driver = await stack.available_driver(lat, lon)
    passenger = str(uuid.uuid4())
    placed = await stack.place(passenger, lat, lon)
    await stack.settled(passenger, placed["id"], "confirmed")
    assert await stack.driver_status(driver) == "busy"
    async with await stack.orders(str(uuid.uuid4())) as http:
        stranger = await http.post(f"/orders/{placed['id']}/cancel")
    assert stranger.status_code == 404, stranger.text
    async with await stack.orders(passenger) as http:
        cancelled = await http.post(f"/orders/{placed['id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    order = await stack.settled(passenger, placed["id"], "cancelled")
    assert order["reason"] == "cancelled by the passenger"
    assert [h["status"] for h in order["history"]][-1] == "cancelled"
    assert await stack.driver_status(driver) == "available"
    async with await stack.orders(passenger) as http:
        again = await http.post(f"/orders/{placed['id']}/cancel")
    assert again.status_code == 409, again.text


async def test_only_the_passenger_the_driver_or_an_admin_sees_an_order(
        stack: OrderStack) -> None:
    lat, lon = somewhere()
    passenger = str(uuid.uuid4())
    placed = await stack.place(passenger, lat, lon)  # no driver: rejected
    await stack.settled(passenger, placed["id"])
    assert (await stack.get(str(uuid.uuid4()), placed["id"])).status_code == 404
    assert (await stack.get(str(uuid.uuid4()), str(uuid.uuid4()))).status_code == 404
    admin = await stack.get("admin", placed["id"], ADMIN_PERMISSIONS)
    assert admin.status_code == 200 and admin.json()["passenger_id"] == passenger

    async with await stack.orders(passenger) as http:
        events = await http.get(f"/orders/{placed['id']}/events")
    assert events.status_code == 200, events.text
    assert [e["event_type"] for e in events.json()["data"]] == ["order.placed",
                                                                 "order.rejected"]
    async with await stack.orders(passenger, ["orders:read"]) as http:
        refused = await http.post("/orders", json=order_body(lat, lon))
    assert refused.status_code == 403, refused.text
    async with stack.order.client() as anonymous:
        assert (await anonymous.get(f"/orders/{placed['id']}")).status_code == 401
    async with await stack.orders(passenger) as http:
        bad = await http.post("/orders", json={"pickup": {"lat": 91, "lon": 0},
                                               "dropoff": {"lat": 0, "lon": 0}})
    assert bad.status_code == 422, bad.text


async def test_operators_see_the_ride_sagas_behind_sagas_read(stack: OrderStack) -> None:
    lat, lon = somewhere()
    passenger = str(uuid.uuid4())
    placed = await stack.place(passenger, lat, lon)
    await stack.settled(passenger, placed["id"])
    async with await stack.orders("operator", ADMIN_PERMISSIONS) as http:
        saga = await http.get(f"/sagas/{placed['id']}")
        assert saga.status_code == 200, saga.text
        assert saga.json()["status"] == "compensated"  # refused: nothing to undo
        assert saga.json()["saga_type"] == "ride"
        listing = await http.get("/sagas", params={"type": "ride"})
        assert listing.status_code == 200
    async with await stack.orders(passenger) as http:
        assert (await http.get(f"/sagas/{placed['id']}")).status_code == 403
