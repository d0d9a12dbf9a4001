"""`python -m core outbox parked|requeue|discard SERVICE` on the sample service's real database
(SQLite and PostgreSQL): parked events listed with what they hold back, requeued, discarded;
bad input refused with exit code 2 and a reason."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from core.db import migrations
from core.db.engine import Database
from tests.helpers import cli
from tests.integration.databases import DatabaseFactory
from tests.sample_service.app import SERVICE_DIR
from tests.sample_service.models import outbox

SERVICE = "tests/sample_service"


def _row(key: str, attempts: int, error: str | None = None) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "topic": "widget.events", "key": key,
            "event_type": "widget.created", "payload": b"{}", "headers": [],
            "created_at": datetime.now(UTC), "attempts": attempts, "last_error": error}


async def test_parked_requeue_and_discard(databases: DatabaseFactory) -> None:
    url = await databases.new()
    db = Database(url)
    try:
        await migrations.upgrade(SERVICE_DIR, db)
        async with db.transaction() as session:
            parked_id = (await session.execute(insert(outbox).values(
                _row("w-1", 3, "widget.events: TOPIC_AUTHORIZATION_FAILED"))
                .returning(outbox.c.id))).scalar_one()
            await session.execute(insert(outbox).values(_row("w-1", 0)))  # held back by it
            await session.execute(insert(outbox).values(_row("w-2", 0)))

        listed = await cli("outbox", "parked", SERVICE, "--url", url)
        assert listed.exit_code == 0, listed.output
        assert "1 parked event(s)" in listed.output
        (line,) = [x for x in listed.output.splitlines() if f"│ {parked_id} " in x]
        cells = [c.strip() for c in line.split("│")]
        assert cells[3:5] == ["widget.events", "w-1"] and cells[6:8] == ["3", "1"]
        assert "TOPIC_AUTHORIZATION_FAILED" in cells[8]

        requeued = await cli("outbox", "requeue", SERVICE, "--id", str(parked_id), "--url", url)
        assert requeued.exit_code == 0 and "requeued 1 parked event(s)" in requeued.output
        async with db.session() as session:
            assert await session.scalar(
                select(outbox.c.attempts).where(outbox.c.id == parked_id)) == 0
        assert "0 parked event(s)" in (await cli("outbox", "parked", SERVICE, "--url", url)
                                        ).output

        async with db.transaction() as session:  # refused again, parked again
            await session.execute(update(outbox).where(outbox.c.id == parked_id)
                                  .values(attempts=3))
        discarded = await cli("outbox", "discard", SERVICE, "--id", str(parked_id),
                              "--url", url)
        assert discarded.exit_code == 0 and "discarded 1 parked event(s)" in discarded.output
        async with db.session() as session:
            left = (await session.execute(select(outbox.c.key).order_by(outbox.c.id))).scalars()
            assert list(left) == ["w-1", "w-2"]
    finally:
        await db.dispose()


@pytest.mark.parametrize(("args", "reason"), [
    (["requeue", SERVICE], "--id ID (repeatable), or pass --all"),
    (["requeue", SERVICE, "--id", "1", "--all"], "--id ID (repeatable), or pass --all"),
    (["requeue", SERVICE, "--id", "seven"], "Invalid value for '--id'"),
    (["discard", SERVICE], "name the events to discard with --id"),
    (["parked", "no_such_service"], "no service 'no_such_service'"),
    (["parked", SERVICE, "--metadata", "tests.sample_service.models:Nope.metadata"],
     "cannot load tests.sample_service.models:Nope.metadata"),
    (["parked", SERVICE, "--metadata", "tests.outbox_service:registry"],
     "is not a MetaData with an outbox table"),
    (["parked", SERVICE, "--max-attempts", "0"], "Invalid value for '--max-attempts'"),
])
async def test_bad_input_exits_2_with_a_reason(args: list[str], reason: str) -> None:
    result = await cli("outbox", *args, "--url", "sqlite+aiosqlite:///:memory:")
    assert result.exit_code == 2, result.output
    assert reason in " ".join(result.output.split()), result.output
