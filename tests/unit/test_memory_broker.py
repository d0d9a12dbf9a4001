"""The in-memory broker's semantics, through the same wrappers the services use over Kafka
(`core.messaging.kafka_client` with a `memory://` address): ordering and partitioning, group
assignment and rebalance callbacks, committed offsets, ends, pause/resume, followers."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Mapping

import pytest

from core.config import KafkaConfig
from core.messaging.errors import UnknownTopicError
from core.messaging.kafka_client import (
    GroupInspector,
    KafkaAdmin,
    KafkaConsumer,
    KafkaProducer,
    TopicFollower,
    TopicPartitionKey,
    committed_offsets,
    group_member_counts,
    read_topic,
)
from core.messaging.memory_broker import broker_for, drop
from core.messaging.types import Record
from tests.helpers.events import unique

TOPIC = "orders"


@pytest.fixture
async def config() -> AsyncIterator[KafkaConfig]:
    address = f"memory://{unique('unit')}"
    yield KafkaConfig(bootstrap_servers=address, client_id="test", consumer_group="g",
                      topic_partitions=3)
    drop(address)


@pytest.fixture
async def producer(config: KafkaConfig) -> AsyncIterator[KafkaProducer]:
    await KafkaAdmin(config).create_topics([TOPIC])
    producer = KafkaProducer(config)
    await producer.start()
    yield producer
    await producer.stop()


class Member:
    """One group member and what its rebalance callbacks saw."""

    def __init__(self, config: KafkaConfig, group: str = "g",
                 revoke_offsets: Mapping[TopicPartitionKey, int] | None = None) -> None:
        self.assigned: list[TopicPartitionKey] = []
        self.revoked: list[TopicPartitionKey] = []
        self.owned: set[TopicPartitionKey] = set()
        self._revoke_offsets = dict(revoke_offsets or {})
        self.client = KafkaConsumer(config, group, on_assign=self._on_assign,
                                    on_revoke=self._on_revoke)

    def _on_assign(self, partitions: list[TopicPartitionKey]) -> None:
        self.assigned += partitions
        self.owned.update(partitions)

    def _on_revoke(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        self.revoked += partitions
        self.owned.difference_update(partitions)
        return {tp: o for tp, o in self._revoke_offsets.items() if tp in partitions}

    async def poll(self, **kwargs: object) -> list[Record]:
        return await self.client.poll(timeout=0.05, **kwargs)  # type: ignore[arg-type]


async def drain(member: Member, rounds: int = 5) -> list[Record]:
    records: list[Record] = []
    for _ in range(rounds):
        records += await member.poll()
    return records


async def test_records_keep_their_order_per_partition_and_keys_hash_as_librdkafka_does(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    keys = [f"k{i}" for i in range(7)]
    for n in range(10):
        await producer.produce_batch(TOPIC, [(f"{k}:{n}".encode(), k, []) for k in keys])
    records = await read_topic(config, TOPIC)
    assert len(records) == 70
    for key in keys:  # the partition librdkafka's consistent partitioner picks
        mine = [r for r in records if r.key == key.encode()]
        assert {r.partition for r in mine} == {zlib.crc32(key.encode()) % 3}
        assert [r.value for r in mine] == [f"{key}:{n}".encode() for n in range(10)]
    for partition in range(3):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))
    report = await producer.produce(TOPIC, b"x", "k0")  # the next offset of its partition
    home = zlib.crc32(b"k0") % 3
    assert (report.partition, report.offset) == (home, sum(r.partition == home
                                                           for r in records))


async def test_a_record_for_a_topic_that_does_not_exist_is_refused_for_good(
        producer: KafkaProducer) -> None:
    with pytest.raises(UnknownTopicError) as refused:
        await producer.produce("no-such-topic", b"x")
    assert refused.value.permanent


async def test_two_members_share_the_partitions_and_hear_of_each_rebalance(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    first, second = Member(config), Member(config)
    await first.client.subscribe([TOPIC])
    await first.poll()
    everything = {(TOPIC, p) for p in range(3)}
    assert first.owned == everything
    assert await group_member_counts(config, ["g", "nobody"]) == {"g": 1, "nobody": 0}

    await second.client.subscribe([TOPIC])
    for _ in range(4):  # the first gives up what moves, then the second takes it
        await first.poll()
        await second.poll()
    assert second.owned and first.owned
    assert first.owned.isdisjoint(second.owned)
    assert first.owned | second.owned == everything
    assert sorted(first.revoked) == sorted(second.assigned)  # revoked before assigned
    assert await group_member_counts(config, ["g"]) == {"g": 2}

    for n in range(30):
        await producer.produce(TOPIC, str(n).encode(), f"key-{n}")
    got = await drain(first) + await drain(second)
    assert sorted(int(r.value or b"") for r in got) == list(range(30))  # each once

    await second.client.close()  # its partitions come back to the first
    await first.poll()
    assert first.owned == everything
    await first.client.close()


async def test_committed_offsets_outlive_the_member_that_committed_them(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    for n in range(6):
        await producer.produce(TOPIC, str(n).encode(), "same-key")
    tp = (TOPIC, zlib.crc32(b"same-key") % 3)
    first = Member(config, revoke_offsets={tp: 4})
    await first.client.subscribe([TOPIC])
    assert len(await drain(first)) == 6
    await first.client.store_offsets({tp: 2})
    assert await committed_offsets(config, "g", TOPIC) == {tp[1]: 2}
    await first.client.close()  # revoking commits what the callback returned
    assert first.revoked and await committed_offsets(config, "g", TOPIC) == {tp[1]: 4}

    second = Member(config)
    await second.client.subscribe([TOPIC])
    assert [r.value for r in await drain(second)] == [b"4", b"5"]
    inspector = GroupInspector(config, "g")
    assert (await inspector.lag([TOPIC]))[tp] == (4, 6)
    assert (await KafkaAdmin(config).group_offsets())["g"] == {tp: 4}  # the console's view
    await inspector.close()
    await second.client.close()


async def test_end_offsets_count_what_each_partition_holds(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    for n in range(5):
        await producer.produce(TOPIC, b"v", f"key-{n}")
    admin = KafkaAdmin(config)
    ends = await admin.end_offsets({TOPIC: 3})
    assert sum(ends.values()) == 5
    assert ends == {(TOPIC, p): broker_for(config.bootstrap_servers).end(TOPIC, p)
                    for p in range(3)}
    assert (await admin.topics())[TOPIC] == 3
    await admin.add_partitions(TOPIC, 4)
    assert (await admin.topics())[TOPIC] == 4
    inspector = GroupInspector(config, "never-committed")
    assert (await inspector.ends([TOPIC]))[(TOPIC, 3)] == 0
    await inspector.close()


async def test_a_paused_partition_hands_out_nothing_until_resumed(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    member = Member(config)
    await member.client.subscribe([TOPIC])
    await member.poll()
    report = await producer.produce(TOPIC, b"held", "k")
    tp = (TOPIC, report.partition)
    assert await member.poll(pause=[tp]) == []
    assert await member.poll() == []
    resumed = await member.poll(resume=[tp])
    assert [r.value for r in resumed] == [b"held"]
    await member.client.close()


async def test_a_waiting_poll_wakes_for_a_new_record(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    member = Member(config)
    await member.client.subscribe([TOPIC])
    await member.poll()
    waiting = asyncio.create_task(member.client.poll(timeout=5.0))
    await asyncio.sleep(0.05)
    await producer.produce(TOPIC, b"now", "k")
    assert [r.value for r in await asyncio.wait_for(waiting, 2.0)] == [b"now"]
    await member.client.close()


async def test_a_follower_reads_the_whole_topic_then_follows_it(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    for n in range(4):
        await producer.produce(TOPIC, str(n).encode(), f"key-{n}")
    follower = TopicFollower(config, TOPIC)
    live = TopicFollower(config, TOPIC, from_end=True)
    await follower.start()
    await live.start()
    seen: list[Record] = []
    for _ in range(5):
        seen += await follower.poll(timeout=0.05)
    assert follower.caught_up and len(seen) == 4
    await producer.produce(TOPIC, b"later", "key-0")
    assert [r.value for r in await follower.poll(timeout=0.5)] == [b"later"]
    assert [r.value for r in await live.poll(timeout=0.5)] == [b"later"]
    await follower.close()
    await live.close()
    missing = TopicFollower(config, "no-such-topic")
    with pytest.raises(Exception, match="does not exist"):
        await missing.start(timeout=0.3)


async def test_a_deleted_topic_is_revoked_and_a_new_one_assigned_without_a_rejoin(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    member = Member(config)
    await member.client.subscribe([TOPIC, "later"])
    await member.poll()
    assert member.owned == {(TOPIC, p) for p in range(3)}  # "later" does not exist yet
    admin = KafkaAdmin(config)
    await admin.create_topics(["later"], partitions=2)
    await member.poll()
    assert {tp for tp in member.owned if tp[0] == "later"} == {("later", 0), ("later", 1)}
    await admin.delete_topics([TOPIC])
    await member.poll()
    assert member.owned == {("later", 0), ("later", 1)}
    assert sorted(member.revoked) == [(TOPIC, p) for p in range(3)]
    await member.client.close()


async def test_a_compacted_topic_keeps_each_keys_last_record_and_its_offsets(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    await KafkaAdmin(config).create_topics(["state"], partitions=1,
                                           configs={"cleanup.policy": "compact"})
    for value, key in [(b"a1", "a"), (b"b1", "b"), (b"a2", "a"), (b"a3", "a")]:
        await producer.produce("state", value, key)
    kept = await read_topic(config, "state")
    assert [(r.offset, r.value) for r in kept] == [(1, b"b1"), (3, b"a3")]
    follower = TopicFollower(config, "state")
    await follower.start()
    assert [r.value for r in await follower.poll(timeout=0.05)] == [b"b1", b"a3"]
    await producer.produce("state", b"b2", "b")  # the last slot, compacted: still an end
    assert [r.value for r in await follower.poll(timeout=0.05)] == [b"b2"]
    await follower.poll(timeout=0.05)
    assert follower.caught_up
    await follower.close()


def test_only_a_memory_address_gets_the_in_memory_clients() -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    from core.messaging.kafka_client import _clients
    from core.messaging.memory_broker import MemoryAdmin, MemoryConsumer, MemoryProducer

    kafka = {"bootstrap.servers": "127.0.0.1:1", "client.id": "unit"}
    consumer = _clients.consumer({**kafka, "group.id": "unit"})
    assert type(consumer) is Consumer  # librdkafka's own, configured as before
    consumer.close()
    assert type(_clients.producer(kafka)) is Producer
    assert type(_clients.admin(kafka)) is AdminClient
    memory = {"bootstrap.servers": "memory://unit-selection"}
    assert isinstance(_clients.consumer({**memory, "group.id": "unit"}), MemoryConsumer)
    assert isinstance(_clients.producer(memory), MemoryProducer)
    assert isinstance(_clients.admin(memory), MemoryAdmin)
    drop(memory["bootstrap.servers"])


async def test_a_long_backlog_on_one_partition_does_not_hold_back_the_others(
        config: KafkaConfig, producer: KafkaProducer) -> None:
    await KafkaAdmin(config).create_topics(["busy"], partitions=2)
    broker = broker_for(config.bootstrap_servers)
    for _ in range(2000):
        broker.append("busy", None, b"backlog", None, partition=0)
    broker.append("busy", None, b"other", None, partition=1)
    member = Member(config)
    await member.client.subscribe(["busy"])
    seen: list[Record] = []
    for _ in range(2):
        seen += await member.client.poll(max_records=500, timeout=0.05)
    assert b"other" in [r.value for r in seen]
    assert len(seen) <= 1000  # the backlog is not all read yet
    await member.client.close()
