"""The reply-topic janitor's judgement over a stand-in admin and a clock moved by hand: only
reply topics whose reader group has had no member for the whole grace, across two sweeps,
are deleted; never its own, never another topic, never one whose group is unknown or back.
Against a real broker: tests/integration/test_request_reply_kafka.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import pytest

import core.messaging.reply_topics as reply_topics
from core.config import KafkaConfig
from core.messaging.reply_topics import ReplyTopicJanitor
from core.tasks import cancel_and_wait
from tests.helpers import Clock, eventually

CONFIG = KafkaConfig("fake:9092", "client", "group")
OWN = "replies.me"


class Broker:
    """`KafkaAdmin` and `group_member_counts` in one: the topics (`names`) and reader groups
    the janitor sees; a group absent from `members` could not be described."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)
        self.members: dict[str, int] = {}
        self.deleted: list[str] = []
        self.down = False

    def __call__(self, config: KafkaConfig) -> Broker:  # KafkaAdmin(config)
        assert config is CONFIG
        return self

    async def topics(self) -> list[str]:
        if self.down:
            raise ConnectionError("no broker")
        return sorted(self.names)

    async def delete_topics(self, topics: Iterable[str]) -> None:
        for topic in topics:
            self.deleted.append(topic)
            self.names.discard(topic)

    async def member_counts(self, config: KafkaConfig, groups: list[str]) -> dict[str, int]:
        assert config is CONFIG
        return {group: self.members[group] for group in groups if group in self.members}


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    broker = Broker([OWN])
    monkeypatch.setattr(reply_topics, "KafkaAdmin", broker)
    monkeypatch.setattr(reply_topics, "group_member_counts", broker.member_counts)
    return broker


def memberless(broker: Broker, *topics: str) -> None:
    for topic in topics:
        broker.names.add(topic)
        broker.members[reply_topics.reader_group(topic)] = 0


async def test_an_orphan_is_deleted_once_memberless_for_exactly_the_grace(
        broker: Broker) -> None:
    clock = Clock(1000.0)  # far from zero: the age is a difference of two readings
    janitor = ReplyTopicJanitor(CONFIG, OWN, grace=60.0, clock=clock)
    memberless(broker, "replies.dead")
    assert await janitor.sweep() == []  # first sighting: never at once
    clock.advance(30.0)
    assert await janitor.sweep() == []  # within the grace
    clock.advance(29.5)
    assert await janitor.sweep() == []
    clock.advance(0.5)  # exactly the grace since it was first seen
    assert await janitor.sweep() == ["replies.dead"]
    assert broker.deleted == ["replies.dead"]
    clock.advance(60.0)
    assert await janitor.sweep() == []  # gone, and forgotten


async def test_orphans_first_seen_together_are_deleted_together(broker: Broker) -> None:
    clock = Clock(0.0)
    janitor = ReplyTopicJanitor(CONFIG, OWN, grace=10.0, clock=clock)
    memberless(broker, "replies.a", "replies.b", "replies.c")
    assert await janitor.sweep() == []
    clock.advance(10.0)
    assert await janitor.sweep() == ["replies.a", "replies.b", "replies.c"]


async def test_a_grace_of_zero_still_waits_for_a_second_sweep(broker: Broker) -> None:
    janitor = ReplyTopicJanitor(CONFIG, OWN, grace=0.0, clock=Clock(5.0))
    memberless(broker, "replies.dead")
    assert await janitor.sweep() == []
    assert await janitor.sweep() == ["replies.dead"]


async def test_its_own_topic_other_topics_and_unknown_or_live_groups_are_kept(
        broker: Broker) -> None:
    clock = Clock(0.0)
    janitor = ReplyTopicJanitor(CONFIG, OWN, grace=0.0, clock=clock)
    memberless(broker, OWN, "user.events", "orders.replies.x")  # readerless, not orphans
    broker.names.add("replies.unknown")  # its group could not be described: alive
    broker.names.add("replies.alive")
    broker.members["replies.alive.reader"] = 1
    for _ in range(3):
        clock.advance(100.0)
        assert await janitor.sweep() == []
    assert broker.deleted == []


async def test_a_reader_that_comes_back_restarts_the_grace(broker: Broker) -> None:
    clock = Clock(0.0)
    janitor = ReplyTopicJanitor(CONFIG, OWN, grace=60.0, clock=clock)
    memberless(broker, "replies.blip")
    assert await janitor.sweep() == []
    clock.advance(50.0)
    broker.members["replies.blip.reader"] = 1  # a rebalance ended: its client lives
    assert await janitor.sweep() == []
    clock.advance(20.0)
    broker.members["replies.blip.reader"] = 0
    assert await janitor.sweep() == []  # seen without a member again: a first sighting
    clock.advance(59.0)
    assert await janitor.sweep() == []
    clock.advance(1.0)
    assert await janitor.sweep() == ["replies.blip"]


def test_a_negative_grace_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^grace must not be negative$"):
        ReplyTopicJanitor(CONFIG, OWN, grace=-1.0)


async def test_run_sweeps_again_after_a_failed_sweep_and_logs_it_as_a_warning(
        broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    janitor = ReplyTopicJanitor(CONFIG, OWN, grace=0.0)
    memberless(broker, "replies.dead")
    broker.down = True
    caplog.set_level(logging.WARNING, reply_topics.__name__)
    task = asyncio.create_task(janitor.run(interval=0.02))
    try:
        await eventually(lambda: task.done() or caplog.records, timeout=10)
        broker.down = False
        await eventually(lambda: task.done() or broker.deleted, timeout=10)
        assert not task.done() and broker.deleted == ["replies.dead"]
    finally:
        await cancel_and_wait(task)
    failed = caplog.records[0]
    assert failed.levelno == logging.WARNING and failed.exc_info is not None
    assert failed.getMessage() == "reply topic sweep failed; trying again in 0s"
