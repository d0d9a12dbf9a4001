"""`TopicFollower`: every partition of one topic, from its beginning, outside any group."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from core.config import KafkaConfig
from core.messaging.errors import ConsumerFailedError, MessagingError
from core.messaging.kafka_client import _clients
from core.messaging.kafka_client._common import _base, _record
from core.messaging.kafka_client.errors import _consumer_failed
from core.messaging.types import Record

log = logging.getLogger(__name__)


class TopicFollower:
    """Reads a whole topic and keeps following it: for state kept in a compacted topic, which
    every reader needs all of (a registry, a table of settings).

    Partitions are assigned, not subscribed through a consumer group: each reader wants every
    partition, so a group would only add a join (and its rebalance delay) before the first
    record, and leave committed offsets behind that nobody reads. `caught_up` turns true once
    every partition has been read to the end it had at `start`; partitions added later are
    picked up within `refresh` seconds. Every librdkafka call runs on one dedicated thread, as
    in `KafkaConsumer`.
    """

    DEFAULTS: dict[str, Any] = {
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    }

    def __init__(self, config: KafkaConfig, topic: str, *, refresh: float = 30.0,
                 from_end: bool = False, offsets: Mapping[int, int] | None = None,
                 **overrides: Any) -> None:
        """`refresh`: seconds between looks for partitions added to the topic since.
        `from_end`: follow only what is written after `start` (a live feed, not state), for
        the partitions there at `start`; partitions added later are read from their
        beginning, which holds only what was written since. `offsets`: the next offset to
        read per partition (a reader's own stored positions), overriding both for the
        partitions it names."""
        # librdkafka wants a group id even without a group; nothing is ever committed under it.
        self._conf = {**_base(config), **self.DEFAULTS, "group.id": f"{config.client_id}-follow",
                      **overrides}
        self.topic = topic
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-follower")
        self._consumer: Consumer | None = None
        self._behind: set[int] | None = None
        self._partitions: set[int] = set()
        self._refresh = refresh
        self._next_refresh = 0.0
        self._start_offset = OFFSET_END if from_end else OFFSET_BEGINNING
        self._offsets = dict(offsets or {})

    @property
    def caught_up(self) -> bool:
        """Every partition was read to its end at least once since `start`."""
        return self._behind is not None and not self._behind

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self, timeout: float = 10.0) -> None:
        """Assign every partition of the topic from its beginning. Raises `MessagingError`
        when no broker answers within `timeout` seconds or the topic does not exist."""
        await self._call(self._start, timeout)

    def _start(self, timeout: float) -> None:
        consumer = _clients.consumer(self._conf)
        deadline = time.monotonic() + timeout
        while True:  # a topic just created (by another process, say) takes a moment to show
            try:
                meta = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            except KafkaException as exc:
                consumer.close()
                raise MessagingError(f"cannot read topic {self.topic}: {exc.args[0]}") from exc
            if meta is not None and meta.error is None and meta.partitions:
                break
            if time.monotonic() > deadline:
                consumer.close()
                raise MessagingError(f"topic {self.topic} does not exist")
            time.sleep(0.2)
        self._behind = set(meta.partitions)
        self._partitions = set(meta.partitions)
        consumer.assign([TopicPartition(self.topic, p, self._offsets.get(p, self._start_offset))
                         for p in meta.partitions])
        self._consumer = consumer
        self._next_refresh = time.monotonic() + self._refresh

    def _follow_new_partitions(self, consumer: Consumer) -> None:
        """Partitions added to the topic after `start` are read too, from their beginning."""
        self._next_refresh = time.monotonic() + self._refresh
        try:
            meta = consumer.list_topics(self.topic, timeout=1.0).topics.get(self.topic)
        except KafkaException:
            return  # the broker is away: the next refresh looks again
        if meta is None or meta.error is not None:
            return
        new = sorted(set(meta.partitions) - self._partitions)
        if new:
            log.info("following %s: new partitions %s", self.topic, new)
            consumer.incremental_assign(
                [TopicPartition(self.topic, p, self._offsets.get(p, OFFSET_BEGINNING))
                 for p in new])
            self._partitions.update(new)

    async def poll(self, max_records: int = 500, timeout: float = 0.2) -> list[Record]:
        """Up to `max_records` records, as soon as one is there (or [] after `timeout`).
        Raises `ConsumerFailedError` on an error the consumer cannot recover from."""
        records = await self._call(self._poll, max_records, timeout)
        return records  # type: ignore[no-any-return]

    def _poll(self, max_records: int, timeout: float) -> list[Record]:
        if self._consumer is None:
            raise MessagingError("the follower is not started")
        if time.monotonic() >= self._next_refresh:
            self._follow_new_partitions(self._consumer)
        try:
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            messages = [first, *self._consumer.consume(max_records - 1, 0)]
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and _consumer_failed(err):
                raise ConsumerFailedError(f"following {self.topic}: {err}") from exc
            raise MessagingError(f"following {self.topic}: {err}") from exc
        records = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(_record(msg))
            elif err.code() == KafkaError._PARTITION_EOF:
                if self._behind is not None:
                    self._behind.discard(msg.partition())
            elif _consumer_failed(err):
                raise ConsumerFailedError(f"following {self.topic}: {err}")
            else:
                log.warning("error following %s: %s", self.topic, err)
        return records

    async def close(self) -> None:
        if self._consumer is not None:
            await self._call(self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=True)
