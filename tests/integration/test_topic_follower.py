"""`TopicFollower` on the real broker: a whole topic from its beginning, caught up on an empty
one, partitions added later followed too, and a clear error for a topic that is not there."""

from __future__ import annotations

import pytest

from core.config import KafkaConfig
from core.messaging.errors import MessagingError
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer, TopicFollower
from core.messaging.types import Record
from tests.helpers import eventually, unique


async def test_a_follower_reads_everything_and_new_partitions_too(
        kafka_config: KafkaConfig) -> None:
    topic = unique("follow")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=1)
    producer = KafkaProducer(kafka_config, **{"topic.metadata.refresh.interval.ms": 200})
    await producer.start()
    follower = TopicFollower(kafka_config, topic, refresh=0.3)
    try:
        await producer.produce(topic, b"old", "k0")
        await follower.start()
        seen: list[Record] = []

        async def caught_up() -> bool:
            seen.extend(await follower.poll())
            return follower.caught_up

        await eventually(caught_up, timeout=20)
        assert [r.value for r in seen] == [b"old"]  # from the beginning, not from the end

        await KafkaAdmin(kafka_config).add_partitions(topic, 3)

        async def on_new_partitions() -> bool:
            for n in range(10):
                await producer.produce(topic, b"new", f"key-{n}")
            seen.extend(await follower.poll())
            return {1, 2} <= {r.partition for r in seen}

        await eventually(on_new_partitions, timeout=30, interval=0.3)
    finally:
        await follower.close()
        await producer.stop()


async def test_an_empty_topic_is_caught_up_at_once_and_a_missing_one_is_refused(
        kafka_config: KafkaConfig) -> None:
    topic = unique("follow")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=2)
    follower = TopicFollower(kafka_config, topic)
    await follower.start()
    await eventually(lambda: _poll_until_caught_up(follower), timeout=20)
    await follower.close()

    missing = TopicFollower(kafka_config, unique("missing"))
    with pytest.raises(MessagingError, match="does not exist"):
        await missing.start(timeout=1.0)
    await missing.close()


async def _poll_until_caught_up(follower: TopicFollower) -> bool:
    assert await follower.poll() == []
    return follower.caught_up


async def test_a_follower_from_the_end_reads_only_what_comes_after_its_start(
        kafka_config: KafkaConfig) -> None:
    topic = unique("follow-end")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=2)
    producer = KafkaProducer(kafka_config)
    await producer.start()
    follower = TopicFollower(kafka_config, topic, from_end=True)
    try:
        await producer.produce(topic, b"before", "k0")
        await follower.start()
        seen: list[Record] = []

        async def caught_up() -> bool:
            seen.extend(await follower.poll())
            return follower.caught_up

        await eventually(caught_up, timeout=20)
        await producer.produce(topic, b"after", "k0")

        async def got_it() -> bool:
            seen.extend(await follower.poll())
            return bool(seen)

        await eventually(got_it, timeout=20)
        assert [r.value for r in seen] == [b"after"]
    finally:
        await follower.close()
        await producer.stop()



async def test_a_follower_starts_each_partition_at_the_offset_it_is_given(
        kafka_config: KafkaConfig) -> None:
    """`offsets=` (a reader's stored positions): the partitions named start there, the others
    from their beginning."""
    topic = unique("follow")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=2)
    producer = KafkaProducer(kafka_config)
    await producer.start()
    try:
        written = [await producer.produce(topic, f"v{n}".encode(), f"key-{n}")
                   for n in range(12)]
    finally:
        await producer.stop()
    counts = {p: sum(1 for r in written if r.partition == p) for p in (0, 1)}
    assert counts[0] > 2, counts  # (12 keys land on both partitions)
    follower = TopicFollower(kafka_config, topic, offsets={0: 2})
    await follower.start()
    seen: list[Record] = []
    try:
        async def caught_up() -> bool:
            seen.extend(await follower.poll())
            return follower.caught_up

        await eventually(caught_up, timeout=20)
    finally:
        await follower.close()
    assert sorted((r.partition, r.offset) for r in seen) == sorted(
        [(0, o) for o in range(2, counts[0])] + [(1, o) for o in range(counts[1])])
