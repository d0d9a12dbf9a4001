"""A member out of its group while records wait: marked stranded after a session timeout, then
rejoined with a fresh client; a spare member, an empty group and an unreachable broker are left
alone. On the fake client (tests/unit/fake_kafka.py); the real broker's drills are in
tests/integration/test_consumer_hardening.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from core.config import KafkaConfig
from core.messaging import consumer as consumer_module
from core.messaging.consumer import EventConsumer
from core.messaging.dlq import InMemoryDeadLetterSink
from core.resilience.retry import RetryPolicy
from tests.helpers import OrderPlaced, eventually, order_registry, placed
from tests.unit.fake_kafka import FakeBroker, FakeInspector

P0, P1 = ("orders", 0), ("orders", 1)
CONFIG = KafkaConfig("fake:9092", "client", "orders-group")
SESSION = {"session.timeout.ms": 200}  # 0.2 s


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    broker = FakeBroker([P0, P1])
    monkeypatch.setattr(consumer_module, "KafkaConsumer", broker.consumer_factory())
    monkeypatch.setattr(consumer_module, "KafkaAdmin", broker.admin_factory())
    monkeypatch.setattr(consumer_module, "WATCH_INTERVAL", 0.02)
    return broker


@pytest.fixture
def inspector(broker: FakeBroker, monkeypatch: pytest.MonkeyPatch) -> FakeInspector:
    fake = FakeInspector(broker)

    def build(config: KafkaConfig, group: str) -> FakeInspector:
        fake.built_for.append((config, group))
        return fake

    fake.built_for = []  # type: ignore[attr-defined]
    monkeypatch.setattr(consumer_module, "GroupInspector", build)
    return fake


@pytest.fixture
async def consumer(broker: FakeBroker, inspector: FakeInspector) -> AsyncIterator[
        Callable[..., Awaitable[tuple[EventConsumer, list[str]]]]]:
    started: list[EventConsumer] = []

    async def start(**options: Any) -> tuple[EventConsumer, list[str]]:
        seen: list[str] = []

        async def handle(event: OrderPlaced) -> None:
            seen.append(event.data.order_id)

        made = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                             dead_letters=InMemoryDeadLetterSink(), create_topics=False,
                             retry=RetryPolicy(max_attempts=2, initial_delay=0),
                             drain_timeout=0.5, **{**SESSION, **options})
        made.subscribe("orders", handle)
        await made.start()
        started.append(made)
        await made.wait_assigned(5)
        return made, seen

    yield start
    for made in started:
        await made.stop()


async def test_the_session_timeout_comes_from_the_client_settings(broker: FakeBroker) -> None:
    assert EventConsumer(CONFIG, None).session_timeout == 10.0  # type: ignore[arg-type]
    made = EventConsumer(CONFIG, None, **{"session.timeout.ms": 6000})  # type: ignore[arg-type]
    assert made.session_timeout == 6.0 and made.rejoin_after == 18.0
    assert EventConsumer(CONFIG, None, rejoin_after=4.0).rejoin_after == 4.0  # type: ignore[arg-type]


async def test_a_lost_member_with_records_waiting_is_stranded_then_rejoins(
    consumer: Any, broker: FakeBroker, inspector: FakeInspector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    made, seen = await consumer(rejoin_after=0.6)
    broker.append(P0, placed("before"))
    await eventually(lambda: seen == ["before"])
    first = broker.client
    first.lose([P0, P1])
    await eventually(lambda: not made._owned)
    broker.append(P0, placed("waiting"))
    broker.append(P1, placed("waiting-too"))
    with caplog.at_level(logging.ERROR, logger="core.messaging.consumer"):
        reason = await eventually(lambda: made.stranded, timeout=5)
        assert reason.startswith("out of group orders-group for ")
        assert reason.endswith("s with 2 records waiting")
        assert made.rejoins == 0, "rejoined before rejoin_after"
        await eventually(lambda: made.rejoins == 1, timeout=5)
    messages = [r.getMessage() for r in caplog.records]
    stranded_lines = [m for m in messages if "out of its group" in m]
    assert len(stranded_lines) == 1 and "2 records wait" in stranded_lines[0], messages
    assert sum("rejoining with a new client" in m for m in messages) == 1
    await eventually(lambda: first.closed)
    assert first.abandoned == consumer_module.CLOSE_TIMEOUT
    assert inspector.built_for == [(CONFIG, "orders-group")]  # type: ignore[attr-defined]
    assert broker.client is not first and made._client is broker.client
    await eventually(lambda: sorted(seen) == ["before", "waiting", "waiting-too"])
    await eventually(lambda: made.stranded is None)
    assert made.rejoins == 1, "rejoined again once back in the group"


async def test_a_replaced_client_can_no_longer_touch_the_consumer(
    consumer: Any, broker: FakeBroker
) -> None:
    made, _ = await consumer(rejoin_after=0.3)
    first = broker.client
    first.lose([P0, P1])
    broker.append(P0, placed("waiting"))
    await eventually(lambda: made.rejoins == 1, timeout=5)
    await eventually(lambda: made._owned == {P0, P1})
    first._on_lost([P0])  # the old client's callbacks, were librdkafka to call them now
    first._on_assign([("other", 0)])
    assert first._on_revoke([P1]) == {}
    assert made._owned == {P0, P1}


async def test_a_member_the_group_still_counts_is_a_spare_not_stranded(
    consumer: Any, broker: FakeBroker
) -> None:
    made, _ = await consumer(rejoin_after=0.2)
    broker.client.revoke([P0, P1])  # more members than partitions: it keeps its member id
    await eventually(lambda: not made._owned)
    broker.append(P0, placed("theirs"))
    await asyncio.sleep(0.6)
    assert made.stranded is None and made.rejoins == 0 and broker.client.member


async def test_nothing_waiting_or_no_broker_to_ask_leaves_the_member_as_it_is(
    consumer: Any, broker: FakeBroker, inspector: FakeInspector
) -> None:
    made, _ = await consumer(rejoin_after=0.2)
    broker.client.lose([P0, P1])
    await eventually(lambda: not made._owned)
    await asyncio.sleep(0.5)  # out for longer than the session, with nothing waiting
    assert made.stranded is None and made.rejoins == 0
    inspector.down = True
    broker.append(P0, placed("unseen"))
    await asyncio.sleep(0.4)
    assert made.stranded is None and made.rejoins == 0
    inspector.down = False
    await eventually(lambda: made.rejoins == 1, timeout=5)


async def test_stop_closes_the_inspector_and_the_current_client(
    broker: FakeBroker, inspector: FakeInspector, consumer: Any
) -> None:
    made, _ = await consumer(rejoin_after=0.2)
    broker.client.lose([P0, P1])
    broker.append(P0, placed("waiting"))
    await eventually(lambda: made.rejoins == 1, timeout=5)
    current = broker.client
    await made.stop()
    assert current.closed and inspector.closed
    assert made._inspector is None and made._closing is None


async def test_a_member_is_not_stranded_before_its_session_timeout(
    consumer: Any, broker: FakeBroker
) -> None:
    made, _ = await consumer(**{"session.timeout.ms": 1500}, rejoin_after=3.0)
    broker.client.lose([P0, P1])
    broker.append(P0, placed("waiting"))
    await eventually(lambda: not made._owned)
    await asyncio.sleep(0.7)
    assert made.stranded is None
    await eventually(lambda: made.stranded, timeout=5)


async def test_a_member_that_keeps_some_partitions_is_not_out(
    consumer: Any, broker: FakeBroker
) -> None:
    made, _ = await consumer(rejoin_after=0.3)
    broker.client.revoke([P0])
    await eventually(lambda: made._owned == {P1})
    assert made._out_since is None
    broker.client.lose([P1])
    await eventually(lambda: not made._owned)
    assert made._out_since is not None


async def test_a_spare_that_is_then_thrown_out_is_stranded(
    consumer: Any, broker: FakeBroker
) -> None:
    made, _ = await consumer(rejoin_after=0.4)
    broker.client.revoke([P0, P1])  # a spare for a while: the watch goes on looking
    await eventually(lambda: not made._owned)
    await asyncio.sleep(0.4)
    broker.client.member = ""  # then its session times out too
    broker.append(P0, placed("waiting"))
    await eventually(lambda: made.rejoins == 1, timeout=5)  # out long enough: at once


async def test_a_fresh_client_that_is_never_assigned_is_replaced_again(
    consumer: Any, broker: FakeBroker
) -> None:
    made, seen = await consumer(rejoin_after=0.3)
    broker.assign = False  # the next client joins no group
    broker.client.lose([P0, P1])
    broker.append(P0, placed("waiting"))
    await eventually(lambda: made.rejoins == 2, timeout=5)
    broker.assign = True
    await eventually(lambda: seen == ["waiting"], timeout=5)
    assert 2 <= made.rejoins <= 3


async def test_a_member_never_assigned_is_stranded_too(
    broker: FakeBroker, inspector: FakeInspector
) -> None:
    broker.assign = False  # it subscribes, and no group ever takes it in
    broker.append(P0, placed("waiting"))
    made = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                         create_topics=False, drain_timeout=0.5, rejoin_after=0.5, **SESSION)
    async def ignore(event: OrderPlaced) -> None:
        return None

    made.subscribe("orders", ignore)
    await made.start()
    try:
        assert made.stranded is None  # nothing to report before the watch has looked
        await eventually(lambda: made.stranded, timeout=5)
        broker.assign = True
        await eventually(lambda: made.rejoins == 1 and made._owned, timeout=5)
    finally:
        await made.stop()
