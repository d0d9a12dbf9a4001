"""The inbox under load and outage, on SQLite and the real PostgreSQL, fed by real Kafka:
more concurrent keys than the pool has connections, handlers that hold their transaction for
a while, and the database going away. None of it may dead-letter a good event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from core.config import KafkaConfig
from core.db.engine import Database
from core.messaging import dlq
from core.messaging.consumer import EventConsumer
from core.messaging.dispatch import Outcome
from core.messaging.inbox import DatabaseIdempotencyStore
from core.messaging.kafka_client import read_topic
from core.messaging.types import MessageContext
from core.resilience.retry import RetryPolicy
from tests.helpers import eventually
from tests.integration.conftest import BusFactory
from tests.integration.databases import DatabaseFactory
from tests.outbox_service import MoneyDeposited, create_schema, deposit, effects, metadata, registry

pytestmark = pytest.mark.kafka

IMPATIENT = RetryPolicy(max_attempts=2, initial_delay=0.1, jitter=False)
"""Gives up fast: a pool timeout or an outage counted as a handler failure dead-letters."""


@pytest.fixture
async def pg_url(postgres: Any, tmp_path: Path) -> AsyncIterator[str]:
    factory = DatabaseFactory("postgres", tmp_path, postgres)
    url = await factory.new()
    await (await create_schema(url)).dispose()
    yield url
    await factory.drop_all()


async def _effects(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(effects)) or 0)


def _settled(consumer: EventConsumer, count: int) -> bool:
    return consumer.processed[Outcome.HANDLED] + consumer.processed[Outcome.DEAD_LETTERED] >= count


async def _run(make_bus: BusFactory, topic: str, store: DatabaseIdempotencyStore,
               handler: Any, count: int) -> EventConsumer:
    bus = make_bus(registry(), retry=IMPATIENT, idempotency=store)
    consumer = bus.subscribe(topic, handler)
    await bus.start()
    await consumer.wait_assigned()
    await bus.publish_many(topic, [deposit(f"acct-{i}", 0) for i in range(count)])
    await eventually(lambda: _settled(consumer, count), timeout=90)
    return consumer


async def test_more_slow_keys_than_pool_connections_are_all_handled_once(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig, pg_url: str
) -> None:
    db = Database(pg_url, pool_size=2, max_overflow=0, pool_timeout=1)
    try:
        async def apply(event: MoneyDeposited, ctx: MessageContext) -> None:
            await ctx.session.execute(insert(effects).values(
                event_id=str(event.event_id), account_id=event.aggregate_id, seq=0))
            await asyncio.sleep(0.3)  # holds its transaction (and connection) meanwhile

        store = DatabaseIdempotencyStore(db, metadata)
        consumer = await _run(make_bus, topic, store, apply, 20)
        assert consumer.processed[Outcome.DEAD_LETTERED] == 0
        assert await _effects(db) == 20
        assert await read_topic(kafka_config, dlq.dlq_topic(topic), timeout=2) == []
        assert store.max_concurrency == 1  # half of a 2-connection pool
    finally:
        await db.dispose()


async def test_slow_handlers_outside_the_session_do_not_lock_sqlite(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.db.engine.SQLITE_BUSY_TIMEOUT_MS", 1000)  # waits on the lock 1 s
    db = await create_schema(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    calls: list[str] = []
    try:
        async def notify(event: MoneyDeposited) -> None:  # an effect outside ctx.session
            calls.append(event.aggregate_id)
            await asyncio.sleep(0.15)

        with caplog.at_level(logging.WARNING, logger="core.messaging.inbox"):
            consumer = await _run(make_bus, topic, DatabaseIdempotencyStore(db, metadata),
                                  notify, 20)
        assert consumer.processed[Outcome.DEAD_LETTERED] == 0
        assert sorted(calls) == sorted(f"acct-{i}" for i in range(20))
        warnings = [r for r in caplog.records if "at-least-once" in r.getMessage()]
        assert len(warnings) == 1 and "notify" in warnings[0].getMessage()
    finally:
        await db.dispose()


async def test_the_database_down_delays_events_and_dead_letters_none(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig, pg_url: str, postgres: Any
) -> None:
    db = Database(pg_url, pool_timeout=2)
    try:
        async def apply(event: MoneyDeposited, ctx: MessageContext) -> None:
            await ctx.session.execute(insert(effects).values(
                event_id=str(event.event_id), account_id=event.aggregate_id, seq=0))

        bus = make_bus(registry(), retry=IMPATIENT,
                       idempotency=DatabaseIdempotencyStore(db, metadata))
        consumer = bus.subscribe(topic, apply)
        await bus.start()
        await consumer.wait_assigned()
        await asyncio.to_thread(postgres.stop)
        try:
            await bus.publish_many(topic, [deposit(f"acct-{i}", 0) for i in range(5)])
            await asyncio.sleep(3)  # several store retries happen while it is down
            assert consumer.processed[Outcome.DEAD_LETTERED] == 0
            assert consumer.processed[Outcome.HANDLED] == 0
        finally:
            await asyncio.to_thread(postgres.restart)
        await eventually(lambda: _settled(consumer, 5), timeout=60)
        assert consumer.processed[Outcome.DEAD_LETTERED] == 0
        assert await _effects(db) == 5
        assert await read_topic(kafka_config, dlq.dlq_topic(topic), timeout=2) == []
    finally:
        await db.dispose()
