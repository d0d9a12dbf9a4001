"""`KafkaConsumer`: a group member driven from one dedicated thread."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from core.config import KafkaConfig
from core.messaging.errors import (
    ConsumerFailedError,
)
from core.messaging.kafka_client import _clients
from core.messaging.kafka_client._common import (
    AssignCallback,
    LostCallback,
    RevokeCallback,
    TopicPartitionKey,
    _base,
)
from core.messaging.kafka_client.errors import _consumer_failed
from core.messaging.types import MessageRecord, Record

log = logging.getLogger(__name__)

SESSION_TIMEOUT_MS = 10_000
"""The default session: a member the coordinator has not heard from for this long is out."""


class KafkaConsumer:
    """A group member that polls in batches and stores offsets only when told to.

    Auto-commit is on, but librdkafka commits only offsets stored through `store_offsets`,
    which the caller does after a record's work is durable: that is at-least-once delivery
    with a commit at most `auto.commit.interval.ms` behind. Every librdkafka call runs on one
    dedicated thread, so the callbacks given for rebalances run there too and may block it.
    """

    DEFAULTS: Mapping[str, Any] = {
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 500,
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 100,
    }

    def __init__(
        self,
        config: KafkaConfig,
        group_id: str,
        *,
        on_assign: AssignCallback | None = None,
        on_revoke: RevokeCallback | None = None,
        on_lost: LostCallback | None = None,
        **overrides: Any,
    ) -> None:
        self._conf = {
            **_base(config),
            **self.DEFAULTS,
            "group.id": group_id,
            "auto.offset.reset": config.auto_offset_reset,
            **overrides,
        }
        self.group_id = group_id
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._consumer: Consumer | None = None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def subscribe(self, topics: Iterable[str]) -> None:
        await self._call(self._subscribe, list(topics))

    def _subscribe(self, topics: list[str]) -> None:
        self._consumer = _clients.consumer(self._conf)
        self._consumer.subscribe(
            topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_assign is not None:
            self._on_assign([(p.topic, p.partition) for p in partitions])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_revoke is None:
            return
        offsets = self._on_revoke([(p.topic, p.partition) for p in partitions])
        if offsets:
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            )
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    log.warning("commit on revoke failed: %s", exc)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may already own them, so nothing may be committed.
        if self._on_lost is not None:
            self._on_lost([(p.topic, p.partition) for p in partitions])

    async def poll(
        self,
        max_records: int = 500,
        timeout: float = 0.1,
        store: Mapping[TopicPartitionKey, int] | None = None,
        pause: Iterable[TopicPartitionKey] = (),
        resume: Iterable[TopicPartitionKey] = (),
    ) -> list[Record]:
        """Up to `max_records` records, as soon as at least one is there (or [] after
        `timeout`). `store` offsets are stored and `pause` / `resume` applied first, in the
        same trip to the consumer thread: one hop per poll keeps the loop's overhead low.

        Raises `ConsumerFailedError` on an error the consumer cannot recover from."""
        messages = await self._call(self._poll, max_records, timeout, store, pause, resume)
        # Converted here, on the loop, not on the consumer thread: Python work there holds the
        # GIL against the loop (a convoy of 5 ms switch intervals); the thread's calls into
        # librdkafka release it.
        # `MessageRecord.of` reads only what the lanes need; the rest is read on first use.
        of = MessageRecord.of
        return [of(msg) for msg in messages]

    def _poll(
        self,
        max_records: int,
        timeout: float,
        store: Mapping[TopicPartitionKey, int] | None,
        pause: Iterable[TopicPartitionKey],
        resume: Iterable[TopicPartitionKey],
    ) -> list[Message]:
        """The records that are good to hand over, still as librdkafka messages."""
        assert self._consumer is not None
        if store:
            self._store(store)
        if pause:
            self._consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            self._consumer.resume([TopicPartition(t, p) for t, p in resume])
        # Wait for the first record only, then take what is already fetched: a batch call with
        # a timeout would sit out the whole timeout whenever fewer than max_records arrive.
        try:
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            messages = [first]
            if max_records > 1:
                messages.extend(self._consumer.consume(max_records - 1, 0))
        except KafkaException as exc:  # librdkafka raises its fatal errors from poll itself
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and _consumer_failed(err):
                raise ConsumerFailedError(f"group {self.group_id}: {err}") from exc
            raise
        records = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(msg)
            elif _consumer_failed(err):
                raise ConsumerFailedError(f"group {self.group_id}: {err}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error in group %s: %s", self.group_id, err)
        return records

    async def store_offsets(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Mark `offsets` (the next offset to read, per partition) as safe to commit."""
        if offsets:
            await self._call(self._store, dict(offsets))

    def _store(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            )
        except KafkaException as exc:
            # Storing for a partition we no longer own fails; its new owner will redo it.
            log.info("could not store offsets %s: %s", offsets, exc)

    def progress(self, partitions: Iterable[TopicPartitionKey]
                 ) -> dict[TopicPartitionKey, tuple[int, int]]:
        """(next offset to fetch, end offset) per partition, from librdkafka's own state: no
        broker round trip, so safe to ask from the loop while the thread polls (scrape-time
        metrics). -1 where it does not know yet (nothing fetched since the assignment)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        result = {}
        for tp in consumer.position([TopicPartition(t, p) for t, p in partitions]):
            _, end = consumer.get_watermark_offsets(tp, cached=True)
            result[(tp.topic, tp.partition)] = (max(tp.offset, -1), max(end, -1))
        return result

    async def member_id(self) -> str | None:
        """The id the group coordinator gave this member; empty or None while the group does
        not count it (before it joins, and after its session timed out until it rejoins)."""
        consumer = self._consumer
        if consumer is None:
            return None
        member: str | None = await self._call(consumer.memberid)
        return member

    async def abandon(self, timeout: float) -> bool:
        """Close a client that may be stuck (replaced by a fresh one), waiting at most
        `timeout` seconds; returns whether it closed. The close runs on a daemon thread: a
        librdkafka close that never returns must not keep the process from exiting."""
        consumer, self._consumer = self._consumer, None
        self._executor.shutdown(wait=False)
        if consumer is None:
            return True
        done = asyncio.get_running_loop().create_future()

        def close() -> None:
            try:
                consumer.close()
            finally:
                done.get_loop().call_soon_threadsafe(_settle, done)

        threading.Thread(target=close, name="kafka-consumer-abandon", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Commit stored offsets and leave the group."""
        if self._consumer is not None:
            await self._call(self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=True)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
