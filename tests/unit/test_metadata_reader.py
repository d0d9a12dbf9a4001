"""`MetadataReader`: a client that stopped answering metadata is replaced by a new one, after
`renew_after` seconds of failures in a row, and no more often than that."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from core.messaging.kafka_client.metadata import MetadataReader


class Client:
    def __init__(self, name: str, answers: bool) -> None:
        self.name, self.answers, self.calls = name, answers, 0

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.calls += 1
        if not self.answers:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return self.name


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reader(first: Client, *made: Client, renew_after: float = 10) -> tuple[MetadataReader, Clock]:
    clock, queue = Clock(), list(made)
    return MetadataReader(first, lambda: queue.pop(0), renew_after=renew_after,
                          clock=clock), clock


async def fail(r: MetadataReader) -> None:
    with pytest.raises(KafkaException):
        await r.list_topics(1)


async def test_the_callers_client_answers_while_it_can() -> None:
    own = Client("own", answers=True)
    r, _ = reader(own)
    assert await r.list_topics(1) == "own"
    assert (own.calls, r.renewals) == (1, 0)


async def test_a_client_failing_for_renew_after_seconds_is_replaced() -> None:
    own, fresh = Client("own", answers=False), Client("fresh", answers=True)
    r, clock = reader(own, fresh)
    await fail(r)
    clock.now += 9.9
    await fail(r)  # not yet: 9.9 s of failures
    assert r.renewals == 0
    clock.now += 0.1
    await fail(r)  # this failure makes the streak 10 s long: the next call asks the new one
    assert r.renewals == 1
    assert await r.list_topics(1) == "fresh"
    assert own.calls == 3


async def test_an_answer_ends_the_streak() -> None:
    own = Client("own", answers=False)
    r, clock = reader(own, Client("fresh", answers=True))
    await fail(r)
    clock.now += 9
    own.answers = True
    assert await r.list_topics(1) == "own"
    own.answers = False
    clock.now += 9
    await fail(r)  # a new streak begins here: 18 s after the first failure, but not in a row
    clock.now += 9
    await fail(r)
    assert r.renewals == 0


async def test_while_the_broker_is_away_a_new_client_is_made_once_per_renew_after() -> None:
    clients = [Client(f"new{i}", answers=False) for i in range(3)]
    r, clock = reader(Client("own", answers=False), *clients)
    await fail(r)
    for _ in range(25):  # 25 s of failures, one a second
        clock.now += 1
        await fail(r)
    assert r.renewals == 2  # at 10 s and at 20 s, not at every call
    assert [c.calls for c in clients[:2]] == [10, 5]


async def test_a_failure_of_a_call_begun_before_the_renewal_does_not_count() -> None:
    own, fresh = Client("own", answers=False), Client("fresh", answers=True)
    r, clock = reader(own, fresh, Client("third", answers=True))
    await fail(r)
    clock.now += 10
    await fail(r)
    assert await r.list_topics(1) == "fresh"
    r._failed(own)  # a late failure of the replaced client: not the new one's streak
    clock.now += 10
    fresh.answers = False
    await fail(r)  # the new client's first failure
    assert r.renewals == 1
