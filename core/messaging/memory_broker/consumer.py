"""`MemoryConsumer`: confluent-kafka's `Consumer`, over the in-process broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    KafkaError,
    TopicPartition,
)

from core.messaging.memory_broker._common import ClusterMetadata, _error, _metadata
from core.messaging.memory_broker.broker import Message, TopicPartitionKey, Waiter
from core.messaging.memory_broker.registry import broker_for

RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class MemoryConsumer:
    """A consumer: a group member after `subscribe`, a reader of chosen partitions after
    `assign` (outside any group), or neither (offsets and watermarks only)."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._broker = broker_for(str(conf["bootstrap.servers"]))
        self._group_id = str(conf.get("group.id", ""))
        self._client_id = str(conf.get("client.id", "rdkafka"))
        self._auto_commit = bool(conf.get("enable.auto.commit", True))
        self._auto_store = bool(conf.get("enable.auto.offset.store", True))
        self._eof = bool(conf.get("enable.partition.eof", False))
        self._from_end = conf.get("auto.offset.reset", "latest") in ("latest", "end", "largest")
        self._member: str | None = None
        self._owned: set[TopicPartitionKey] = set()
        """What this member was given in its group and has not given up (its own view: a
        partition of a deleted topic is still here until its revoke callback ran)."""
        self._callbacks: dict[str, RebalanceCallback | None] = {}
        self._positions: dict[TopicPartitionKey, int] = {}
        self._stored: dict[TopicPartitionKey, int] = {}
        self._paused: set[TopicPartitionKey] = set()
        self._eof_at: dict[TopicPartitionKey, int] = {}
        self._closed = False
        self._turn = 0
        self._waiter = Waiter()
        self._broker.watch(self._waiter)

    # group membership

    def subscribe(self, topics: list[str], on_assign: RebalanceCallback | None = None,
                  on_revoke: RebalanceCallback | None = None,
                  on_lost: RebalanceCallback | None = None) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self._waiter.topics = frozenset(topics)
        self._waiter.group = self._group_id
        self._member = self._broker.join(self._group_id, self._client_id, frozenset(topics))

    def memberid(self) -> str | None:
        return self._member

    def _rebalance(self) -> bool:
        """Act on the group's target assignment: give up what this member should no longer
        own (its revoke callback first, which may commit), then take what is free for it.
        Returns whether anything changed."""
        member, broker = self._member, self._broker
        if member is None:
            return False
        with broker.lock:
            group = broker.group(self._group_id)
            revoke = sorted(tp for tp in self._owned if group.target.get(tp) != member)
        if revoke:
            self._call("revoke", revoke)
            with broker.lock:
                for tp in revoke:
                    if group.owner.get(tp) == member:
                        del group.owner[tp]
                    self._owned.discard(tp)
                    self._forget(tp)
            broker.wake(self._group_id)  # what it gave up may be another member's now
        with broker.lock:
            assign = sorted(tp for tp, m in group.target.items()
                            if m == member and tp not in group.owner)
            for tp in assign:
                group.owner[tp] = member
                self._owned.add(tp)
                done = group.committed.get(tp)
                self._positions[tp] = (done if done is not None
                                       else broker.end(*tp) if self._from_end else 0)
        if assign:
            self._call("assign", assign)
        return bool(revoke or assign)

    def _call(self, which: str, partitions: list[TopicPartitionKey]) -> None:
        callback = self._callbacks.get(which)
        if callback is not None:
            callback(self, [TopicPartition(t, p) for t, p in partitions])

    def _forget(self, tp: TopicPartitionKey) -> None:
        self._positions.pop(tp, None)
        self._stored.pop(tp, None)
        self._paused.discard(tp)
        self._eof_at.pop(tp, None)

    # assignment outside a group

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._positions.clear()
        self.incremental_assign(partitions)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self._waiter.topics |= {tp.topic for tp in partitions}
        for tp in partitions:
            key = (tp.topic, tp.partition)
            end = max(self._broker.end(*key), 0)
            if tp.offset == OFFSET_BEGINNING:
                self._positions[key] = 0
            elif tp.offset == OFFSET_END:
                self._positions[key] = end
            elif tp.offset >= 0:
                self._positions[key] = tp.offset
            else:
                done = self._broker.committed(self._group_id, key)
                self._positions[key] = done if done is not None else (
                    end if self._from_end else 0)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    # reading

    def poll(self, timeout: float | None = None) -> Message | None:
        got = self._take(1, timeout)
        return got[0] if got else None

    def consume(self, num_messages: int = 1, timeout: float | None = None) -> list[Message]:
        return self._take(num_messages, timeout)

    def _take(self, limit: int, timeout: float | None) -> list[Message]:
        if self._closed:
            raise RuntimeError("Consumer closed")
        wait = 1e9 if timeout is None or timeout < 0 else timeout
        deadline = time.monotonic() + wait
        broker = self._broker
        wake = self._waiter.event
        while True:
            wake.clear()  # before looking: whatever comes after sets it again
            self._rebalance()
            with broker.lock:
                found = self._ready(limit)
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wake.wait(remaining)

    def _ready(self, limit: int) -> list[Message]:
        """Records (and end-of-partition events) of unpaused partitions; under the lock."""
        found: list[Message] = []
        # Each call starts one partition further on, so a partition with a long backlog
        # cannot keep the others waiting (librdkafka's fetches take turns too).
        order = list(self._positions.items())
        self._turn = (self._turn + 1) % max(len(order), 1)
        for tp, position in order[self._turn:] + order[:self._turn]:
            if tp in self._paused:
                continue
            batch, after = self._broker.read(tp[0], tp[1], position, limit - len(found))
            if after != position:
                found.extend(batch)
                position = self._positions[tp] = after
                if self._auto_store:
                    self._stored[tp] = position
            if (self._eof and len(found) < limit and self._eof_at.get(tp) != position
                    and position >= self._broker.end(*tp)):
                self._eof_at[tp] = position
                found.append(Message(tp[0], tp[1], position, None, None, None, 0,
                                     KafkaError(KafkaError._PARTITION_EOF, "end of partition")))
            if len(found) >= limit:
                break
        if self._auto_store and self._auto_commit and self._member is not None:
            self._commit_stored()
        return found

    # offsets

    def store_offsets(self, message: Message | None = None,
                      offsets: list[TopicPartition] | None = None) -> None:
        wanted = {(tp.topic, tp.partition): tp.offset for tp in offsets or []}
        if message is not None:
            wanted[(message.topic(), message.partition())] = message.offset() + 1
        foreign = [tp for tp in wanted if tp not in self._positions]
        if foreign:
            raise _error(KafkaError._STATE, f"partitions not assigned: {foreign}")
        with self._broker.lock:
            self._stored.update(wanted)
            if self._auto_commit:
                self._commit_stored()

    def _commit_stored(self) -> None:
        """Auto-commit, at once: librdkafka commits what was stored every 500 ms; here a
        commit costs a dict update, so there is no reason to lag."""
        if self._stored:
            self._broker.commit(self._group_id, self._stored)

    def commit(self, message: Message | None = None, offsets: list[TopicPartition] | None = None,
               asynchronous: bool = True) -> None:
        if offsets is not None:
            self._broker.commit(self._group_id, {(tp.topic, tp.partition): tp.offset
                                                 for tp in offsets})
        elif message is not None:
            self._broker.commit(self._group_id, {
                (message.topic(), message.partition()): message.offset() + 1})
        elif self._stored:
            self._commit_stored()
        else:
            raise _error(KafkaError._NO_OFFSET, "no offset stored")

    def committed(self, partitions: list[TopicPartition], timeout: float | None = None
                  ) -> list[TopicPartition]:
        result = []
        for tp in partitions:
            done = self._broker.committed(self._group_id, (tp.topic, tp.partition))
            result.append(TopicPartition(tp.topic, tp.partition,
                                         OFFSET_INVALID if done is None else done))
        return result

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition,
                               self._positions.get((tp.topic, tp.partition), OFFSET_INVALID))
                for tp in partitions]

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        end = self._broker.end(partition.topic, partition.partition)
        return (0, end) if end >= 0 else (-1, -1)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        return _metadata(self._broker, topic)

    def close(self) -> None:
        """Leave the group as librdkafka does: revoke (the callback commits), commit what is
        stored, go."""
        if self._closed:
            return
        self._closed = True
        member = self._member
        if member is None:
            self._broker.unwatch(self._waiter)
            return
        owned = sorted(self._owned)
        if owned:
            self._call("revoke", owned)
        if self._auto_commit:
            self._commit_stored()
        self._broker.leave(self._group_id, member)
        self._broker.unwatch(self._waiter)
        self._member = None
