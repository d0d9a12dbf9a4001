"""Sagas over real Kafka through the outbox relay, on SQLite and the real PostgreSQL: the
happy path, a refusal at each step, timeouts, compensations that fail and are retried or end
in needs_attention, replies delivered twice, orchestrators racing, and 500 sagas at once with
failures injected at random steps (tests/saga_rig.py has the saga and its participants)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from confluent_kafka import Producer
from sqlalchemy import func, select

from core.config import KafkaConfig
from core.db import Database
from core.messaging import KafkaAdmin, read_topic
from core.messaging.outbox import outbox_table
from core.messaging.types import HEADER_EVENT_ID, HEADER_IN_REPLY_TO, Record
from core.resilience import RetryPolicy
from core.saga import (
    COMPENSATED,
    COMPLETED,
    H_SAGA_ID,
    NEEDS_ATTENTION,
    SagaOrchestrator,
    SagaStateError,
)
from tests.helpers import eventually, unique
from tests.integration.databases import DatabaseFactory
from tests.saga_rig import (
    FAST_RETRY,
    Done,
    DoneData,
    Node,
    TripData,
    answer,
    create_schema,
    held,
    metadata,
    planned,
    statuses,
    tables,
    trip_saga,
)

pytestmark = pytest.mark.kafka


class System:
    """One database, the saga's topics, and the nodes started on them."""

    def __init__(self, url: str, config: KafkaConfig, topic: str, replies: str) -> None:
        self.url, self.config = url, config
        self.saga = trip_saga(topic, replies)
        self.nodes: list[Node] = []
        self.db = Database(url)

    async def node(self, **options: Any) -> Node:
        saga = options.pop("saga", self.saga)
        node = await Node(self.url, self.config, saga, **options).start()
        self.nodes.append(node)
        return node

    async def begin(self, node: Node, *trips: TripData) -> list[str]:
        assert node.sagas is not None
        ids = []
        async with node.db.transaction() as session:
            for data in trips:
                ids.append(await node.sagas.begin(session, self.saga, data))
        return ids

    async def settled(self, ids: list[str], timeout: float = 60) -> dict[str, str]:
        """Wait until every saga of `ids` has ended; their statuses."""
        t = tables.instances

        async def ended() -> dict[str, str] | None:
            async with self.db.session() as session:
                rows = (await session.execute(
                    select(t.c.id, t.c.status).where(t.c.id.in_(ids)))).all()
            found = dict((row.id, row.status) for row in rows)
            done = all(s in (COMPLETED, COMPENSATED, NEEDS_ATTENTION) for s in found.values())
            return found if done and len(found) == len(ids) else None

        return await eventually(ended, timeout=timeout, interval=0.1, what="sagas ended")

    async def history(self, saga_id: str) -> list[tuple[str, str]]:
        node = self.nodes[0]
        assert node.sagas is not None
        return [(h.step_name, h.event) for h in await node.sagas.history(saga_id)]

    async def close(self) -> None:
        for node in self.nodes:
            await node.stop()
        await self.db.dispose()


@pytest.fixture
async def system(databases: DatabaseFactory, kafka_config: KafkaConfig
                 ) -> AsyncIterator[System]:
    url = await databases.new()
    await create_schema(url)
    topic, replies = unique("trip-commands"), unique("trip-replies")
    await KafkaAdmin(kafka_config).create_topics([topic, replies], partitions=3)
    built = System(url, kafka_config, topic, replies)
    yield built
    await built.close()


COMPENSATED_ALL = [("confirm", "compensated_all")]


async def test_a_saga_runs_every_step_and_keeps_what_the_replies_said(system: System) -> None:
    node = await system.node()
    (saga_id,) = await system.begin(node, TripData(trip="happy"))
    assert await system.settled([saga_id]) == {saga_id: COMPLETED}
    assert await system.history(saga_id) == [
        ("seat", "started"), ("seat", "sent"), ("seat", "succeeded"),
        ("payment", "sent"), ("payment", "succeeded"),
        ("confirm", "sent"), ("confirm", "succeeded"), ("confirm", "completed")]
    assert node.sagas is not None
    record = await node.sagas.get(saga_id)
    assert record.data["seat"] == f"reserve-{saga_id}"  # the seat step's reply, kept
    assert (await held(system.db))[saga_id] == {"seat", "payment"}


@pytest.mark.parametrize(("failing", "undone"), [
    ("seat", []),
    ("payment", ["seat"]),
    ("confirm", ["payment", "seat"]),
])
async def test_a_refused_step_compensates_the_steps_before_it_in_reverse(
    system: System, failing: str, undone: list[str]
) -> None:
    node = await system.node()
    (saga_id,) = await system.begin(node, TripData(trip="refused", fail=failing))
    assert await system.settled([saga_id]) == {saga_id: COMPENSATED}
    history = await system.history(saga_id)
    assert (failing, "failed") in history
    assert [name for name, event in history if event == "compensated"] == undone
    assert failing not in [name for name, event in history if event == "compensation_sent"]
    assert saga_id not in await held(system.db)
    assert node.sagas is not None
    assert (await node.sagas.get(saga_id)).last_error == f"{failing}: test.saga.refused: planned"


async def test_a_step_without_a_reply_times_out_and_is_compensated_with_the_earlier_ones(
    system: System,
) -> None:
    """The silent participant acted (it holds the payment) but never answered: the timed-out
    step is compensated too, so nothing stays held."""
    system.saga = trip_saga(system.saga.steps[0].topic, system.saga.reply_topic, timeout=1.0)
    node = await system.node()
    (saga_id,) = await system.begin(node, TripData(trip="silent", silent="payment"))
    assert await system.settled([saga_id], timeout=30) == {saga_id: COMPENSATED}
    history = await system.history(saga_id)
    assert ("payment", "timed_out") in history
    assert [name for name, event in history if event == "compensated"] == ["payment", "seat"]
    assert saga_id not in await held(system.db)


async def test_a_failing_compensation_is_retried_with_backoff_until_it_is_done(
    system: System,
) -> None:
    node = await system.node()
    (saga_id,) = await system.begin(node, TripData(trip="stubborn", fail="confirm",
                                                   comp_failures=2))
    assert await system.settled([saga_id]) == {saga_id: COMPENSATED}
    history = await system.history(saga_id)
    assert [n for n, e in history if e == "compensation_failed"] == [
        "payment", "payment", "seat", "seat"]
    assert [n for n, e in history if e == "compensation_sent"] == ["payment"] * 3 + ["seat"] * 3
    assert saga_id not in await held(system.db)


async def test_a_silent_compensation_times_out_and_is_sent_again(system: System) -> None:
    system.saga = trip_saga(system.saga.steps[0].topic, system.saga.reply_topic,
                            comp_timeout=0.5)
    node = await system.node()
    (saga_id,) = await system.begin(node, TripData(trip="deaf", fail="payment", comp_silent=1))
    assert await system.settled([saga_id]) == {saga_id: COMPENSATED}
    history = await system.history(saga_id)
    assert history.count(("seat", "compensation_sent")) == 2
    assert saga_id not in await held(system.db)


async def test_a_compensation_that_keeps_failing_needs_attention_until_an_operator_retries(
    system: System,
) -> None:
    node = await system.node()
    assert node.sagas is not None
    (saga_id,) = await system.begin(node, TripData(trip="stuck", fail="payment",
                                                   comp_failures=FAST_RETRY.max_attempts))
    assert await system.settled([saga_id]) == {saga_id: NEEDS_ATTENTION}
    record = await node.sagas.get(saga_id)
    assert record.attempts == FAST_RETRY.max_attempts
    assert record.last_error is not None and "refusal 4" in record.last_error
    assert node.sagas.counts[NEEDS_ATTENTION] == 1
    assert [r.id for r in await node.sagas.store.find(status=NEEDS_ATTENTION)] == [saga_id]
    assert (await held(system.db))[saga_id] == {"seat"}  # still held: that is the incident
    await asyncio.sleep(3 * node.sweep_interval)  # the sweeper leaves it alone
    assert (await node.sagas.get(saga_id)).version == record.version
    with pytest.raises(SagaStateError):
        await node.sagas.cancel(saga_id, "too late")
    await node.sagas.retry(saga_id)  # the participant gives in at the fifth attempt
    assert await system.settled([saga_id]) == {saga_id: COMPENSATED}
    assert saga_id not in await held(system.db)
    assert ("seat", "retried") in await system.history(saga_id)


async def test_a_running_saga_can_be_cancelled_and_compensates(system: System) -> None:
    system.saga = trip_saga(system.saga.steps[0].topic, system.saga.reply_topic, timeout=30)
    node = await system.node()
    assert node.sagas is not None
    (saga_id,) = await system.begin(node, TripData(trip="cancelled", silent="payment"))
    await eventually(lambda: _at(node.sagas, saga_id, 1), what="saga at payment")
    await node.sagas.cancel(saga_id, "the rider changed their mind")
    assert await system.settled([saga_id]) == {saga_id: COMPENSATED}
    assert saga_id not in await held(system.db)
    assert (await node.sagas.get(saga_id)).last_error == "cancelled: the rider changed their mind"


async def _at(sagas: SagaOrchestrator | None, saga_id: str, step: int) -> bool:
    assert sagas is not None
    record = await sagas.get(saga_id)
    return record.step == step and record.command_id is not None


def _produce(config: KafkaConfig, records: list[Record], times: int) -> None:
    producer = Producer({"bootstrap.servers": config.bootstrap_servers})
    for _ in range(times):
        for r in records:
            producer.produce(r.topic, r.value, r.key, headers=r.headers)
    assert producer.flush(10) == 0


async def _outbox_rows(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(
            select(func.count()).select_from(outbox_table(metadata))) or 0)


async def test_a_reply_delivered_twice_moves_its_saga_once(system: System) -> None:
    """Every reply re-produced twice by a raw producer, and one answered again under a new
    event id (a participant that answered twice): the history, the commands sent and the
    ledger stay as they were."""
    node = await system.node()
    assert node.sagas is not None
    ids = await system.begin(node, TripData(trip="a"), TripData(trip="b", fail="confirm"))
    await system.settled(ids)
    before = ({i: await system.history(i) for i in ids}, await _outbox_rows(system.db),
              await held(system.db))
    replies = await read_topic(system.config, system.saga.reply_topic)
    assert len(replies) == 3 + 5  # a: 3 steps; b: 2 steps, its refusal, 2 compensations
    ignored = node.sagas.counts["ignored"]
    _produce(system.config, replies, times=2)
    first = replies[0]
    again = Done(data=DoneData(action="reserve", ref="another seat"),
                 causation_id=first.header("causation_id"))
    await node.bus.publish(system.saga.reply_topic, again, key=first.header(H_SAGA_ID),
                           headers=[(H_SAGA_ID, (first.header(H_SAGA_ID) or "").encode()),
                                    (HEADER_IN_REPLY_TO,
                                     (first.header(HEADER_IN_REPLY_TO) or "").encode())])
    await eventually(lambda: node.sagas is not None
                     and node.sagas.counts["ignored"] >= ignored + 1, what="reply ignored")
    await asyncio.sleep(1)  # the raw copies: nothing to await, since the inbox drops them
    after = ({i: await system.history(i) for i in ids}, await _outbox_rows(system.db),
             await held(system.db))
    assert after == before
    assert node.sagas.counts["ignored"] == ignored + 1  # the inbox dropped the copies


async def test_a_late_reply_to_a_step_the_saga_has_left_moves_nothing(system: System) -> None:
    """The seat step's reply produced again while the saga waits at the payment step: as it
    was (the inbox drops it), and under a new event id (past the inbox: the orchestrator sees
    that the saga awaits another command)."""
    system.saga = trip_saga(system.saga.steps[0].topic, system.saga.reply_topic, timeout=60)
    node = await system.node()
    assert node.sagas is not None
    (saga_id,) = await system.begin(node, TripData(trip="late", silent="payment"))
    await eventually(lambda: _at(node.sagas, saga_id, 1), what="saga at payment")
    before = await node.sagas.get(saga_id), await system.history(saga_id)
    (seat_reply,) = await read_topic(system.config, system.saga.reply_topic)
    renamed = [(k, str(uuid.uuid4()).encode() if k == HEADER_EVENT_ID else v)
               for k, v in seat_reply.headers]
    ignored = node.sagas.counts["ignored"]
    _produce(system.config, [seat_reply, dataclasses.replace(seat_reply, headers=renamed)], 1)
    await eventually(lambda: node.sagas is not None
                     and node.sagas.counts["ignored"] == ignored + 1, what="reply ignored")
    assert (await node.sagas.get(saga_id), await system.history(saga_id)) == before


async def test_orchestrators_racing_on_the_same_replies_and_deadlines_move_each_saga_once(
    system: System,
) -> None:
    """Two orchestrators apply the same reply to the same sagas at once, and sweep the same
    overdue sagas at once: each saga moves once, and each command is sent once. No
    participant runs: the test answers for it."""
    system.saga = trip_saga(system.saga.steps[0].topic, system.saga.reply_topic, timeout=0.5)
    a = await system.node(participate=False, sweep_interval=3600)  # sweeps only when told
    b = await system.node(participate=False, sweep_interval=3600)
    assert a.sagas is not None and b.sagas is not None
    ids = await system.begin(a, *[TripData(trip=str(i), silent="seat") for i in range(30)])
    await asyncio.sleep(1.0)  # past every deadline
    await asyncio.gather(*[o.sweep() for o in (a.sagas, b.sagas) for _ in range(3)])
    moved = [a.sagas.counts["timed_out"], b.sagas.counts["timed_out"]]
    assert sum(moved) == 30, moved
    # Now both apply one forged success reply for each saga's (now compensating) command.
    def released(saga_id: str) -> Done:
        return Done(data=DoneData(action="release", ref=saga_id))

    before = a.sagas.counts["lost_race"] + b.sagas.counts["lost_race"]
    await asyncio.gather(*[answer(o, i, released(i)) for i in ids
                           for o in (a.sagas, b.sagas)])
    await system.settled(ids)
    for saga_id in ids:
        history = await system.history(saga_id)
        assert history.count(("seat", "timed_out")) == 1
        assert history.count(("seat", "compensated")) == 1
    lost = a.sagas.counts["lost_race"] + b.sagas.counts["lost_race"] - before
    ignored = a.sagas.counts["ignored"] + b.sagas.counts["ignored"]
    assert lost + ignored == 30  # the loser of each pair did nothing
    assert await _commands_per_saga(system.db) == Counter({i: 2 for i in ids})


async def _commands_per_saga(db: Database) -> Counter[str]:
    t = outbox_table(metadata)
    async with db.session() as session:
        rows = (await session.execute(select(t.c.headers).where(
            t.c.event_type == "test.saga.act"))).all()
    return Counter(dict(h)[H_SAGA_ID] for (h,) in rows)


async def test_500_concurrent_sagas_with_failures_and_timeouts_all_end_and_hold_nothing(
    system: System,
) -> None:
    """Two orchestrators (racing sweepers, one reply group) and the participants, 500 sagas
    with refusals and silences at random steps: every saga ends completed or compensated,
    each planned refusal or silence compensated, and the participants hold exactly what the
    completed sagas hold. A saga planned to go through may time out all the same when the
    database is slow to serve 500 at once (SQLite's one writer, on a loaded machine): then it
    must be compensated, and for that reason only."""
    system.saga = trip_saga(system.saga.steps[0].topic, system.saga.reply_topic, timeout=5.0,
                            comp_timeout=2.5)
    patient = RetryPolicy(max_attempts=8, initial_delay=0.05, max_delay=0.5)  # 3 planned misses
    first = await system.node(retry=patient)
    await system.node(participate=False, retry=patient)
    trips = planned(random.Random(21), 500)
    ids: list[str] = []
    for chunk in range(0, len(trips), 50):
        ids += await system.begin(first, *trips[chunk:chunk + 50])
    started = time.monotonic()
    outcome = await system.settled(ids, timeout=120)
    print(f"500 sagas ended in {time.monotonic() - started:.1f}s")
    plan = dict(zip(ids, trips, strict=True))
    assert {i for i, t in plan.items() if t.fail or t.silent} <= {
        i for i, s in outcome.items() if s == COMPENSATED}
    assert set(outcome.values()) <= {COMPLETED, COMPENSATED}
    for saga_id in (i for i, s in outcome.items() if s == COMPENSATED and not (
            plan[i].fail or plan[i].silent)):
        events = [event for _, event in await system.history(saga_id)]
        assert "timed_out" in events and "failed" not in events, events
    assert await statuses(system.db) == Counter(outcome.values())
    assert sum(Counter(outcome.values()).values()) == 500
    holding = await held(system.db)
    assert {i for i, s in outcome.items() if s == COMPLETED} == set(holding)
    assert all(r == {"seat", "payment"} for r in holding.values())
    unplanned = sum(1 for i, s in outcome.items() if s == COMPENSATED
                    and not (plan[i].fail or plan[i].silent))
    print(f"{Counter(outcome.values())}; {unplanned} planned to go through timed out")
