"""The orchestrating process killed (SIGKILL) in the middle of 120 sagas and started again:
every saga finishes or compensates, as its plan says, and nothing stays held. All the state
is in the database; the new process finds the due work with its sweeper and the replies
waiting in Kafka with its consumer."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from core.config import KafkaConfig
from core.db import Database
from core.messaging import KafkaAdmin
from core.saga import COMPENSATED, COMPLETED, RUNNING
from tests.helpers import eventually, unique
from tests.integration.databases import DatabaseFactory
from tests.processes import Spawner
from tests.saga_rig import Node, create_schema, held, planned, statuses, tables, trip_saga

pytestmark = pytest.mark.kafka

N = 120
PROC = "tests.integration.procs.saga_orchestrator"


@pytest.fixture
async def url(databases: DatabaseFactory) -> AsyncIterator[str]:
    made = await databases.new()
    await create_schema(made)
    yield made


async def _line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 90)
    assert line.strip() == expected, f"{PROC} said {line!r}, exited {proc.poll()}"


async def _ended(db: Database) -> int:
    t = tables.instances
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(t).where(
            t.c.status.in_((COMPLETED, COMPENSATED)))) or 0)


async def test_a_killed_orchestrator_restarted_finishes_or_compensates_every_saga(
    url: str, kafka_config: KafkaConfig, spawn: Spawner
) -> None:
    topic, replies = unique("trip-commands"), unique("trip-replies")
    await KafkaAdmin(kafka_config).create_topics([topic, replies], partitions=3)
    participants = await Node(url, kafka_config, trip_saga(topic, replies),
                              orchestrate=False).start()
    db = Database(url)
    group = unique("orchestrators")
    args = (url, kafka_config.bootstrap_servers, group, topic, replies)
    try:
        first = spawn(PROC, *args, str(N))
        await _line(first, "ready")
        await _line(first, "begun")
        await eventually(lambda: _ended(db), what="a first saga ended", timeout=60)
        first.kill()  # SIGKILL: no drain, no lease handed back, offsets as they were
        first.wait()
        at_kill = await statuses(db)
        assert at_kill[RUNNING] + at_kill["compensating"] > 0, at_kill  # killed mid-load
        second = spawn(PROC, *args, "0")
        await _line(second, "ready")
        await eventually(lambda: _all_ended(db), what="every saga ended", timeout=150)
    finally:
        await participants.stop()
    outcome = await statuses(db)
    assert outcome[COMPLETED] + outcome[COMPENSATED] == N
    plan = planned(random.Random(N), N)
    assert outcome[COMPENSATED] >= sum(1 for t in plan if t.fail or t.silent)
    holding = await held(db)
    t = tables.instances
    async with db.session() as session:
        completed = set((await session.scalars(
            select(t.c.id).where(t.c.status == COMPLETED))).all())
    assert set(holding) == completed
    assert Counter(frozenset(r) for r in holding.values()) == Counter(
        {frozenset({"seat", "payment"}): len(completed)})
    await db.dispose()


async def _all_ended(db: Database) -> bool:
    return await _ended(db) == N
