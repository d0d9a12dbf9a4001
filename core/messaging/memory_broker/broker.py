"""The broker's state: topics, partitions, offsets, consumer groups. Thread-safe.

Every client thread (the producer's caller, each consumer's own thread) meets here under one
lock. A waiting consumer sleeps on its own `Waiter`, woken only by a record on a topic it reads
or a change of its group: one wake-up for everyone per record would have every consumer
thread of the process take the GIL from the event loop for each record. No client callback
ever runs under the lock.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import zlib
from dataclasses import dataclass, field

from confluent_kafka import KafkaError

TopicPartitionKey = tuple[str, int]
Headers = list[tuple[str, bytes]]

TIMESTAMP_CREATE_TIME = 1
"""What `Message.timestamp()` says the time is (confluent-kafka's constant)."""


class Message:
    """One stored record, read as a confluent-kafka `Message` is (methods, not attributes),
    so the wrappers of `core.messaging.kafka_client` take it unchanged. An end-of-partition
    event is a message with `error()` set and no record."""

    __slots__ = ("_error", "_headers", "_key", "_offset", "_partition", "_timestamp", "_topic",
                 "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, headers: Headers | None, timestamp_ms: int,
                 error: KafkaError | None = None) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers
        self._timestamp = timestamp_ms
        self._error = error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._timestamp

    def error(self) -> KafkaError | None:
        return self._error

    def __len__(self) -> int:
        return len(self._value or b"")


def partition_for(key: bytes | None, partitions: int) -> int:
    """librdkafka's default partitioner (`consistent_random`): CRC-32 of the key modulo the
    partition count, so a key lands on the partition it would on Kafka; no key: any one."""
    if key is None:
        return random.randrange(partitions)
    return zlib.crc32(key) % partitions


@dataclass(eq=False)
class Waiter:
    """A consumer's wake-up: set on a record for one of `topics`, or a change of `group`."""

    event: threading.Event = field(default_factory=threading.Event)
    topics: frozenset[str] = frozenset()
    group: str | None = None


@dataclass
class Group:
    """A consumer group: its members' subscriptions, who should own and who owns each
    partition, and the committed offsets, which outlive every member."""

    subscriptions: dict[str, frozenset[str]] = field(default_factory=dict)
    target: dict[TopicPartitionKey, str] = field(default_factory=dict)
    owner: dict[TopicPartitionKey, str] = field(default_factory=dict)
    committed: dict[TopicPartitionKey, int] = field(default_factory=dict)


class Broker:
    """Topics as lists of partition logs (the offset is the index), and consumer groups.

    Assignment is cooperative, as with the clients' `cooperative-sticky` strategy: a
    partition moving between members is first revoked by its owner (which commits), and only
    then assigned to the next, so two members never own it at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.waiters: set[Waiter] = set()
        self.topics: dict[str, list[list[Message | None]]] = {}
        """Each partition's log; a slot is None once compaction dropped its record."""
        self.topic_configs: dict[str, dict[str, str]] = {}
        self._latest: dict[tuple[str, int, bytes], int] = {}
        """Compacted topics: the offset of each key's latest record, per partition."""
        self.groups: dict[str, Group] = {}
        self._ids = itertools.count(1)

    # --- topics ----------------------------------------------------------------------------

    def create_topic(self, topic: str, partitions: int,
                     config: dict[str, str] | None = None) -> bool:
        """Whether it was created (False: it existed, and is left as it is)."""
        with self.lock:
            if topic in self.topics:
                return False
            self.topics[topic] = [[] for _ in range(partitions)]
            self.topic_configs[topic] = dict(config or {})
            self._retarget_all()
            return True

    def add_partitions(self, topic: str, total: int) -> None:
        with self.lock:
            logs = self.topics[topic]
            if total <= len(logs):
                raise ValueError(f"topic {topic} has {len(logs)} partitions, not fewer than "
                                 f"{total}")
            logs.extend([] for _ in range(total - len(logs)))
            self._retarget_all()

    def delete_topic(self, topic: str) -> bool:
        with self.lock:
            if self.topics.pop(topic, None) is None:
                return False
            self.topic_configs.pop(topic, None)
            for gone in [k for k in self._latest if k[0] == topic]:
                del self._latest[gone]
            self._retarget_all()
            return True

    def partition_counts(self) -> dict[str, int]:
        with self.lock:
            return {name: len(logs) for name, logs in self.topics.items()}

    def end(self, topic: str, partition: int) -> int:
        """The next offset to be written (the high watermark); -1 if there is no such
        partition."""
        with self.lock:
            logs = self.topics.get(topic)
            if logs is None or partition >= len(logs):
                return -1
            return len(logs[partition])

    # --- records ---------------------------------------------------------------------------

    def append(self, topic: str, key: bytes | None, value: bytes | None,
               headers: Headers | None, partition: int = -1) -> Message:
        """Store one record; raises KeyError when the topic does not exist (topics are never
        created on first use, as on the project's brokers)."""
        with self.lock:
            logs = self.topics[topic]
            if partition < 0:
                partition = partition_for(key, len(logs))
            log = logs[partition]
            msg = Message(topic, partition, len(log), key, value, headers,
                          time.time_ns() // 1_000_000)
            log.append(msg)
            for waiter in self.waiters:
                if topic in waiter.topics:
                    waiter.event.set()
            if key is not None and self.topic_configs[topic].get("cleanup.policy") == "compact":
                # Compacted at once, which Kafka may do at any time: the log's memory grows
                # with its keys, not its writes (the registry's heartbeats, every few seconds).
                previous = self._latest.get((topic, partition, key))
                if previous is not None:
                    log[previous] = None
                self._latest[(topic, partition, key)] = msg.offset()
            return msg

    def read(self, topic: str, partition: int, offset: int, limit: int
             ) -> tuple[list[Message], int]:
        """Up to `limit` records from `offset` on, and the offset to read next (past any
        compacted-away slots)."""
        with self.lock:
            logs = self.topics.get(topic)
            if logs is None or partition >= len(logs):
                return [], offset
            log = logs[partition]
            found: list[Message] = []
            position = offset
            while position < len(log) and len(found) < limit:
                msg = log[position]
                position += 1
                if msg is not None:
                    found.append(msg)
            return found, position

    # --- groups ----------------------------------------------------------------------------

    def group(self, group_id: str) -> Group:
        with self.lock:
            return self.groups.setdefault(group_id, Group())

    def join(self, group_id: str, client_id: str, topics: frozenset[str]) -> str:
        """A new member of `group_id` subscribed to `topics`; returns its member id."""
        with self.lock:
            member = f"{client_id}-{next(self._ids)}"
            group = self.group(group_id)
            group.subscriptions[member] = topics
            self._retarget(group_id, group)
            return member

    def leave(self, group_id: str, member: str) -> None:
        """Take `member` out; the partitions it still owns are free for the others."""
        with self.lock:
            group = self.group(group_id)
            group.subscriptions.pop(member, None)
            for tp in [tp for tp, m in group.owner.items() if m == member]:
                del group.owner[tp]
            self._retarget(group_id, group)

    def commit(self, group_id: str, offsets: dict[TopicPartitionKey, int]) -> None:
        with self.lock:
            self.group(group_id).committed.update(offsets)

    def committed(self, group_id: str, tp: TopicPartitionKey) -> int | None:
        with self.lock:
            group = self.groups.get(group_id)
            return None if group is None else group.committed.get(tp)

    def watch(self, waiter: Waiter) -> None:
        with self.lock:
            self.waiters.add(waiter)

    def unwatch(self, waiter: Waiter) -> None:
        with self.lock:
            self.waiters.discard(waiter)

    def wake(self, group_id: str) -> None:
        """Wake the members of `group_id` (to act on a change of who owns what)."""
        with self.lock:
            for waiter in self.waiters:
                if waiter.group == group_id:
                    waiter.event.set()

    def _retarget_all(self) -> None:
        for name, group in self.groups.items():
            self._retarget(name, group)

    def _retarget(self, name: str, group: Group) -> None:
        """Spread every partition of the subscribed topics over the members subscribed to
        it (round robin in member order), and wake the group's members to act on it."""
        members = sorted(group.subscriptions)
        target: dict[TopicPartitionKey, str] = {}
        topics = sorted(set().union(*group.subscriptions.values()))
        for topic in topics:
            logs = self.topics.get(topic)
            subscribed = [m for m in members if topic in group.subscriptions[m]]
            if logs is None or not subscribed:
                continue
            for partition in range(len(logs)):
                target[(topic, partition)] = subscribed[partition % len(subscribed)]
        for tp in [tp for tp in group.owner if tp[0] not in self.topics]:
            del group.owner[tp]  # its topic was deleted
        group.target = target
        self.wake(name)

    def describe(self) -> dict[str, int]:
        """Groups and their member counts, for the admin client."""
        with self.lock:
            return {name: len(g.subscriptions) for name, g in self.groups.items()}
