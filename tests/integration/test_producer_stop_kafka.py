"""`KafkaProducer.stop()` against a real broker: nothing it held is left pending, whatever the
broker does, and a stopped producer says so.

Every await on a producer future is bounded by `asyncio.wait_for`: a hang fails the test in
seconds instead of stalling it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from core.config import KafkaConfig
from core.messaging.errors import ProducerStoppedError, PublishError
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer
from tests.helpers import eventually, unique

pytestmark = pytest.mark.timeout(60)

NO_HANG = 10.0  # seconds; far beyond what a prompt answer takes


def nothing_listens() -> str:
    """A loopback address where no server listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def outstanding(producer: KafkaProducer, count: int) -> None:
    """Wait until librdkafka holds `count` records (the test's produces have been queued)."""
    await eventually(lambda: _holds(producer, count), timeout=NO_HANG)


async def _holds(producer: KafkaProducer, count: int) -> bool:
    return await producer.flush(0) >= count


async def assert_stopped_error(fut: asyncio.Future[Any] | asyncio.Task[Any]) -> None:
    with pytest.raises(ProducerStoppedError, match="stopped") as info:
        await asyncio.wait_for(fut, NO_HANG)
    assert isinstance(info.value, PublishError) and not info.value.permanent


async def test_stop_fails_records_waiting_for_a_topic_that_does_not_exist(
    kafka_config: KafkaConfig,
) -> None:
    # The broker does not auto-create topics: librdkafka holds these records until it gives up
    # on the topic's metadata, far longer than stop's timeout.
    missing = unique("missing")
    producer = KafkaProducer(kafka_config)
    await producer.start()
    ack = await producer.enqueue(missing, b"one")
    caller = asyncio.create_task(producer.produce(missing, b"two"))
    batch = asyncio.create_task(
        producer.produce_batch(missing, [(b"three", None, []), (b"four", b"k", [])])
    )
    await outstanding(producer, 4)

    started = time.monotonic()
    await asyncio.wait_for(producer.stop(timeout=1), NO_HANG)
    for fut in (ack, caller, batch):
        await assert_stopped_error(fut)
    assert time.monotonic() - started < 5


async def test_stop_fails_records_when_no_broker_listens() -> None:
    config = KafkaConfig(nothing_listens(), unique("client"), unique("group"))
    producer = KafkaProducer(config)
    await producer.start()
    caller = asyncio.create_task(producer.produce("orders", b"x", b"key"))
    batch = asyncio.create_task(producer.produce_batch("orders", [(b"y", None, [])]))
    await outstanding(producer, 2)

    await asyncio.wait_for(producer.stop(timeout=1), NO_HANG)
    await assert_stopped_error(caller)
    await assert_stopped_error(batch)


async def test_stop_fails_records_in_flight_when_the_broker_dies(
    kafka: Any, kafka_config: KafkaConfig
) -> None:
    topic = unique("topic")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=1)
    producer = KafkaProducer(kafka_config)
    await producer.start()
    await asyncio.wait_for(producer.produce(topic, b"before"), NO_HANG)  # metadata is known
    kafka.kill()  # the fixture restarts it before the next test
    caller = asyncio.create_task(producer.produce(topic, b"during"))
    batch = asyncio.create_task(producer.produce_batch(topic, [(b"b1", None, []),
                                                                (b"b2", None, [])]))
    await outstanding(producer, 3)

    await asyncio.wait_for(producer.stop(timeout=1), NO_HANG)
    await assert_stopped_error(caller)
    await assert_stopped_error(batch)


async def test_stop_finishes_despite_the_callers_cancellation_and_is_idempotent(
    kafka_config: KafkaConfig,
) -> None:
    missing = unique("missing")
    producer = KafkaProducer(kafka_config)
    await producer.start()
    ack = await producer.enqueue(missing, b"x")
    await outstanding(producer, 1)

    # The caller gives up while stop is still flushing (its timeout is 2 s): the shutdown
    # must carry on and still fail the held record.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(producer.stop(timeout=2), 0.2)
    await assert_stopped_error(ack)
    await asyncio.wait_for(producer.stop(timeout=2), NO_HANG)
    await asyncio.wait_for(asyncio.gather(producer.stop(), producer.stop()), NO_HANG)


async def test_a_stopped_producer_refuses_records_with_a_clear_error(
    kafka_config: KafkaConfig,
) -> None:
    producer = KafkaProducer(kafka_config)
    await producer.start()
    await producer.stop()

    with pytest.raises(ProducerStoppedError, match="stopped"):
        producer.produce_nowait("orders", b"x")
    with pytest.raises(ProducerStoppedError, match="stopped"):
        await producer.produce("orders", b"x")
    with pytest.raises(ProducerStoppedError, match="stopped"):
        await producer.enqueue("orders", b"x")
    with pytest.raises(ProducerStoppedError, match="stopped"):
        await producer.produce_batch("orders", [(b"x", None, [])])
