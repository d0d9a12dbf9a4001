"""Stand-ins for confluent-kafka's `Producer`, `Consumer` and `AdminClient` over a `Broker`.

They offer the part of confluent-kafka's API that `core.messaging.kafka_client` calls, with
its shapes (methods returning `TopicPartition` lists, admin calls returning futures, errors
as `KafkaException(KafkaError)`), so the wrappers (their threads, callbacks, futures and
shutdown) run unchanged over either. Callbacks run on the calling thread, as librdkafka's run
on the thread that polls: delivery reports inside `produce`, rebalance callbacks inside a
consumer's `poll`, `consume` or `close`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from core.messaging.memory_broker.broker import (
    Broker,
    Headers,
    Message,
    TopicPartitionKey,
    Waiter,
)
from core.messaging.memory_broker.registry import broker_for

DeliveryCallback = Callable[[KafkaError | None, Message], None]
RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


# --- metadata, shaped as confluent-kafka's ---------------------------------------------------

@dataclass(frozen=True)
class PartitionMetadata:
    id: int


@dataclass(frozen=True)
class TopicMetadata:
    topic: str
    partitions: dict[int, PartitionMetadata]
    error: KafkaError | None = None


@dataclass(frozen=True)
class ClusterMetadata:
    topics: dict[str, TopicMetadata] = field(default_factory=dict)


def _metadata(broker: Broker, topic: str | None) -> ClusterMetadata:
    counts = broker.partition_counts()
    names = [topic] if topic is not None else list(counts)
    return ClusterMetadata({
        name: TopicMetadata(name, {p: PartitionMetadata(p) for p in range(counts[name])})
        for name in names if name in counts})


def _done(result: Any = None, error: BaseException | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


def _error(code: int, reason: str) -> KafkaException:
    return KafkaException(KafkaError(code, reason))


def _key(key: bytes | str | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


# --- producer --------------------------------------------------------------------------------

class MemoryProducer:
    """Stores each record at once and reports its delivery inside `produce`."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._broker = broker_for(str(conf["bootstrap.servers"]))

    def produce(self, topic: str, value: bytes | None = None, key: bytes | str | None = None,
                partition: int = -1, on_delivery: DeliveryCallback | None = None,
                headers: Headers | None = None, **_: Any) -> None:
        raw_key = _key(key)
        try:
            msg = self._broker.append(topic, raw_key, value, headers, partition)
            err = None
        except KeyError:
            msg = Message(topic, -1, -1, raw_key, value, headers, 0)
            err = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                             f"topic {topic} does not exist (in-memory broker)")
        if on_delivery is not None:
            on_delivery(err, msg)

    def poll(self, timeout: float = 0) -> int:
        if timeout > 0:
            time.sleep(timeout)  # nothing is ever pending: reports went out in produce
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True
              ) -> None:
        return None

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        return _metadata(self._broker, topic)


# --- consumer --------------------------------------------------------------------------------

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
        for tp, position in self._positions.items():
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


# --- admin -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Offset:
    offset: int


@dataclass(frozen=True)
class _GroupListing:
    group_id: str


@dataclass(frozen=True)
class _Groups:
    valid: list[_GroupListing]


@dataclass(frozen=True)
class _GroupOffsets:
    group_id: str
    topic_partitions: list[TopicPartition]


@dataclass(frozen=True)
class _GroupDescription:
    group_id: str
    members: list[str]


class MemoryAdmin:
    """Topic and group administration; every call answers at once (completed futures)."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._broker = broker_for(str(conf["bootstrap.servers"]))

    def create_topics(self, new_topics: Iterable[Any], **_: Any) -> dict[str, Future[None]]:
        futures = {}
        for new in new_topics:
            count = int(new.num_partitions)
            if count < 1:
                futures[new.topic] = _done(error=_error(KafkaError.INVALID_PARTITIONS,
                                                        "partitions must be at least 1"))
            elif self._broker.create_topic(new.topic, count, dict(new.config or {})):
                futures[new.topic] = _done()
            else:
                futures[new.topic] = _done(error=_error(KafkaError.TOPIC_ALREADY_EXISTS,
                                                        f"topic {new.topic} already exists"))
        return futures

    def create_partitions(self, new_partitions: Iterable[Any], **_: Any
                          ) -> dict[str, Future[None]]:
        futures = {}
        for new in new_partitions:
            try:
                self._broker.add_partitions(new.topic, int(new.new_total_count))
                futures[new.topic] = _done()
            except (KeyError, ValueError) as exc:
                futures[new.topic] = _done(error=_error(KafkaError.INVALID_PARTITIONS, str(exc)))
        return futures

    def delete_topics(self, topics: Iterable[str], **_: Any) -> dict[str, Future[None]]:
        return {t: _done() if self._broker.delete_topic(t) else _done(
            error=_error(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {t}")) for t in topics}

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        return _metadata(self._broker, topic)

    def list_offsets(self, wanted: Mapping[TopicPartition, Any], **_: Any
                     ) -> dict[TopicPartition, Future[_Offset]]:
        return {tp: _done(_Offset(self._broker.end(tp.topic, tp.partition))) for tp in wanted}

    def list_consumer_groups(self, **_: Any) -> Future[_Groups]:
        return _done(_Groups([_GroupListing(g) for g in self._broker.describe()]))

    def list_consumer_group_offsets(self, requests: Iterable[Any], **_: Any
                                    ) -> dict[str, Future[_GroupOffsets]]:
        futures = {}
        for request in requests:
            with self._broker.lock:
                committed = dict(self._broker.group(request.group_id).committed)
            futures[request.group_id] = _done(_GroupOffsets(request.group_id, [
                TopicPartition(t, p, o) for (t, p), o in sorted(committed.items())]))
        return futures

    def describe_consumer_groups(self, groups: Iterable[str], **_: Any
                                 ) -> dict[str, Future[_GroupDescription]]:
        with self._broker.lock:
            return {g: _done(_GroupDescription(g, sorted(
                self._broker.groups[g].subscriptions) if g in self._broker.groups else []))
                    for g in groups}
