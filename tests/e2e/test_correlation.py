"""One correlation id, end to end: the `X-Correlation-ID` a client sends to the gateway's
register route is on auth's `auth.user_registered`, on the user service's
`user.profile_created` (caused by the first) and on the notification service's welcome row,
each hop through real processes and Kafka."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.kafka_tools import Record, about, records
from tests.e2e.system import PASSWORD, System, eventually, unwrap


def ids(record: Record) -> dict[str, Any]:
    """The ids as the envelope states them and as the record headers do."""
    headers = {name: value.decode() for name, value in record.headers if value is not None}
    return {"event_id": record.envelope["event_id"],
            "correlation_id": record.envelope.get("correlation_id"),
            "causation_id": record.envelope.get("causation_id"),
            "header_correlation_id": headers.get("correlation_id"),
            "header_causation_id": headers.get("causation_id")}


async def welcome_correlation(url: str, user_id: str) -> list[str | None]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT correlation_id FROM notifications WHERE user_id = :user AND "
                "kind = 'welcome'"), {"user": user_id})
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


async def test_the_correlation_id_sent_to_the_gateway_reaches_every_event_and_the_notification(
        system: System) -> None:
    correlation_id = f"e2e-{uuid.uuid4().hex}"
    email = f"corr-{uuid.uuid4().hex[:12]}@example.com"
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=15.0) as gateway:
        answer = await gateway.post("/api/auth/register",
                                    json={"email": email, "password": PASSWORD},
                                    headers={"X-Correlation-ID": correlation_id})
    assert answer.status_code == 201, answer.text
    assert answer.headers["x-correlation-id"] == correlation_id
    user_id = str(unwrap(answer.json())["id"])
    bootstrap = system.bootstrap_servers

    # auth wrote its event in the request: the request's correlation, no cause.
    [registered] = await eventually(lambda: records(bootstrap, "auth.events", about(
        "auth.user_registered", user_id=user_id)), timeout=30, interval=0.5)
    first = ids(registered)
    assert first["correlation_id"] == first["header_correlation_id"] == correlation_id, first
    assert first["causation_id"] is None and first["header_causation_id"] is None, first

    # The user service wrote its event while handling auth's: the same correlation, and
    # auth's event as its cause.
    [created] = await eventually(lambda: records(bootstrap, "user.events", about(
        "user.profile_created", user_id=user_id)), timeout=30, interval=0.5)
    second = ids(created)
    assert second["correlation_id"] == second["header_correlation_id"] == correlation_id, second
    assert second["causation_id"] == second["header_causation_id"] == first["event_id"], second

    # The notification service's welcome row, made from auth's event, keeps it too.
    url = system.database_url("notification")
    kept = await eventually(lambda: welcome_correlation(url, user_id), timeout=30, interval=0.5)
    assert kept == [correlation_id]
