"""What the order service keeps from Kafka, in its running process: the two read models
(projections of `order.events`: the passengers' orders, the drivers' trips) follow the orders,
and `python -m core projections rebuild` replays them from the topic's start into the same
rows, repairing a row damaged by hand. The saga's replies move orders: test_http.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from core.db import Database
from services.order.models import driver_trips, order_history
from services.order.tests.conftest import OrderStack, somewhere
from tests.helpers import eventually
from tests.helpers.cli import cli

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def rows(stack: OrderStack, table: Any) -> list[tuple[Any, ...]]:
    db = Database(stack.database_url)
    try:
        async with db.session() as session:
            return [tuple(r) for r in (await session.execute(
                select(table).order_by(table.c.order_id))).all()]
    finally:
        await db.dispose()


async def test_a_rebuilt_read_model_equals_the_live_one(
        stack: OrderStack, monkeypatch: pytest.MonkeyPatch) -> None:
    lat, lon = somewhere()
    driver_user, _ = await stack.available_driver(lat, lon)
    passenger = str(uuid.uuid4())
    trip = (await stack.place(passenger, lat, lon))["id"]
    await stack.settled(passenger, trip, "confirmed")
    async with await stack.orders(driver_user) as http:
        assert (await http.post(f"/orders/{trip}/complete")).status_code == 200
    refused = (await stack.place(passenger, lat + 10, lon))["id"]
    await stack.settled(passenger, refused, "rejected")

    async def caught_up() -> bool:
        async with await stack.orders(passenger) as http:
            listed = (await http.get("/orders")).json()["data"]
        async with await stack.orders(driver_user) as http:
            trips = (await http.get("/orders/trips")).json()["data"]
        return ({r["id"]: r["status"] for r in listed} == {trip: "completed",
                                                           refused: "rejected"}
                and [(t["id"], t["status"]) for t in trips] == [(trip, "completed")])

    assert await eventually(caught_up, timeout=30)
    live = {t.name: await rows(stack, t) for t in (order_history, driver_trips)}

    db = Database(stack.database_url)  # damage the live rows, as a buggy apply would
    try:
        async with db.transaction() as session:
            await session.execute(update(order_history).where(
                order_history.c.order_id == trip).values(status="pending"))
            await session.execute(driver_trips.delete())
    finally:
        await db.dispose()

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap_servers)
    for name in ("order_history", "driver_trips"):
        result = await cli("projections", "rebuild", "order", name, "--url",
                           stack.database_url)
        assert result.exit_code == 0, result.output
    assert {t.name: await rows(stack, t) for t in (order_history, driver_trips)} == live
