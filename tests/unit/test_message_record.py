"""`MessageRecord`: the consumer's lazy view of a librdkafka message (issue 24) gives what the
eagerly built `Record` gave, compares equal to it, and copies into a plain `Record`."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from core.messaging.dispatch import Outcome, RecordDispatcher
from core.messaging.dlq import InMemoryDeadLetterSink
from core.messaging.handlers import HandlerRegistry
from core.messaging.idempotency import InMemoryIdempotencyStore
from core.messaging.kafka_client._common import _record
from core.messaging.serialization import EventSerializer
from core.messaging.types import MessageContext, MessageRecord, Record
from tests.helpers import OrderPlaced, order_registry, placed

HEADERS = [("event_type", b"a"), ("corr", b"1"), ("corr", b"2"), ("empty", None)]


def message(**fields: Any) -> Message:
    base: dict[str, Any] = dict(topic="orders", partition=2, offset=41, key=b"k", value=b"{}",
                                headers=HEADERS,
                                timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_123))
    return Message(**{**base, **fields})


@pytest.mark.parametrize("fields", [{}, {"key": None, "value": None, "headers": None}])
def test_a_lazy_record_reads_what_the_eager_one_held(fields: dict[str, object]) -> None:
    msg = message(**fields)
    eager, lazy = _record(msg), MessageRecord.of(msg)
    assert isinstance(lazy, Record)
    for name in ("topic", "partition", "offset", "key", "value", "headers", "timestamp_ms"):
        assert getattr(lazy, name) == getattr(eager, name), name
    assert lazy == eager and eager == lazy and not lazy != eager
    assert lazy != dataclasses.replace(eager, offset=42)
    assert lazy.header("corr") == eager.header("corr") == ("2" if not fields else None)
    assert repr(lazy) == repr(eager).replace("Record(", "MessageRecord(", 1)


def test_its_headers_are_read_once_and_it_stays_frozen() -> None:
    lazy = MessageRecord.of(message())
    assert lazy.headers is lazy.headers
    with pytest.raises(dataclasses.FrozenInstanceError):
        lazy.topic = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        lazy.headers = []  # type: ignore[misc]


def test_replacing_copying_or_pickling_it_gives_a_plain_record() -> None:
    lazy = MessageRecord.of(message())
    replaced = dataclasses.replace(lazy, headers=[("x", b"y")])
    assert type(replaced) is Record and replaced.headers == [("x", b"y")]
    assert replaced.offset == 41 and replaced.timestamp_ms == 1_700_000_000_123
    for copied in (copy.copy(lazy), copy.deepcopy(lazy), pickle.loads(pickle.dumps(lazy))):
        assert type(copied) is Record and copied == lazy


async def test_the_dispatcher_handles_a_lazy_record_as_it_did_an_eager_one() -> None:
    value, headers = EventSerializer(order_registry()).serialize(placed("o-1", 3))
    seen: list[tuple[int, str | None, bytes | None]] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        seen.append((event.data.seq, ctx.record.header("event_type"), ctx.record.key))

    registry = HandlerRegistry(order_registry())
    registry.add(OrderPlaced, handle)
    dispatcher = RecordDispatcher(registry, InMemoryIdempotencyStore(), InMemoryDeadLetterSink())
    msg = message(key=b"o-1", value=value, headers=headers)
    assert await dispatcher.process(MessageRecord.of(msg)) is Outcome.HANDLED
    assert await dispatcher.process(_record(msg)) is Outcome.HANDLED  # the inbox: once
    assert seen == [(3, "order.placed", b"o-1")]
