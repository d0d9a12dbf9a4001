"""A stand-in for `KafkaProducer` (and a reply-topic `KafkaConsumer`), for unit tests of the
outbox relay and request-reply.

It keeps what those rely on from the real client: `enqueue` returns an acknowledgement future
that resolves later (on a later turn of the loop, as librdkafka's reports do), a record is
refused either when handed over (`PublishError` from `enqueue`) or in its report, and
`topic_exists` answers from "fresh metadata" or raises `MessagingError` when no broker does.
Acknowledged records land in per-topic logs that `FakeReplyConsumer` reads. The real client is
tested against a real broker (tests/integration); these tests pin down the callers' own logic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from core.messaging.errors import MessagingError, UnknownTopicError
from core.messaging.kafka_client import DeliveryReport
from core.messaging.types import Headers, Record


@dataclass
class Refusal:
    """Refuse the records `matches` picks with `error`, `times` times (None: always);
    `on_enqueue` refuses at hand-over, otherwise in the delivery report (where a
    `CancelledError` cancels the acknowledgement)."""

    matches: Callable[[Record], bool]
    error: BaseException
    on_enqueue: bool
    times: int | None


class FakeProducer:
    """Records in hand-over order (`handed`) and, once acknowledged, in each topic's log
    (`logs`). `hold()` keeps reports back until `release()`; a record to a topic not in
    `topics` is refused as unknown in its report."""

    def __init__(self, topics: Iterable[str] = ()) -> None:
        self.topics = set(topics)
        self.handed: list[Record] = []
        self.logs: dict[str, list[Record]] = {}
        self.metadata_down = False
        self.metadata_asks: list[str] = []
        self.routes: dict[str, Callable[[Record], Any]] = {}
        self._refusals: list[Refusal] = []
        self._held: list[tuple[Record, asyncio.Future[DeliveryReport]]] | None = None
        self._hold_only: Callable[[Record], bool] | None = None
        self._arrived = asyncio.Event()
        self.queue_full: asyncio.Event | None = None
        """Set to an unset Event: `enqueue` waits for room until it is set."""

    # -- scripting -------------------------------------------------------------------------
    def refuse(self, matches: Callable[[Record], bool], error: BaseException, *,
               on_enqueue: bool = False, times: int | None = None) -> None:
        self._refusals.append(Refusal(matches, error, on_enqueue, times))

    def hold(self, matches: Callable[[Record], bool] | None = None) -> None:
        """Keep reports back until `release()`: the broker is slow (for the records
        `matches` picks, or for all)."""
        if self._held is None:
            self._held = []
        self._hold_only = matches

    def release(self, matches: Callable[[Record], bool] | None = None) -> None:
        """Send the held reports and hold no more; with `matches`, send only the reports of
        the records it picks and keep holding the rest."""
        if matches is None or self._held is None:
            held, self._held = self._held or [], None
        else:
            held = [(rec, ack) for rec, ack in self._held if matches(rec)]
            self._held = [(rec, ack) for rec, ack in self._held if not matches(rec)]
        for rec, ack in held:
            self._report(rec, ack)

    @property
    def held(self) -> int:
        return len(self._held or [])

    def published(self, topic: str) -> list[Record]:
        return self.logs.get(topic, [])

    def keys(self, topic: str) -> list[str | None]:
        return [r.key.decode() if r.key is not None else None for r in self.published(topic)]

    # -- what the callers use ----------------------------------------------------------------
    async def enqueue(
        self, topic: str, value: bytes | None, key: bytes | str | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[DeliveryReport]:
        if self.queue_full is not None:
            await self.queue_full.wait()
        raw_key = key.encode() if isinstance(key, str) else key
        rec = Record(topic, 0, len(self.handed), raw_key, value, list(headers or []))
        error = self._refusal(rec, on_enqueue=True)
        if error is not None:
            raise error
        self.handed.append(rec)
        ack: asyncio.Future[DeliveryReport] = asyncio.get_running_loop().create_future()
        if self._held is not None and (self._hold_only is None or self._hold_only(rec)):
            self._held.append((rec, ack))
        else:
            asyncio.get_running_loop().call_soon(self._report, rec, ack)
        return ack

    async def produce(
        self, topic: str, value: bytes | None, key: bytes | str | None = None,
        headers: Headers | None = None,
    ) -> DeliveryReport:
        return await (await self.enqueue(topic, value, key, headers))

    async def topic_exists(self, topic: str, timeout: float = 5.0) -> bool:
        self.metadata_asks.append(topic)
        if self.metadata_down:
            raise MessagingError("no topic metadata: all brokers down")
        return topic in self.topics

    # -- inside ------------------------------------------------------------------------------
    def _refusal(self, rec: Record, *, on_enqueue: bool) -> BaseException | None:
        for refusal in self._refusals:
            if refusal.on_enqueue != on_enqueue or refusal.times == 0:
                continue
            if refusal.matches(rec):
                if refusal.times is not None:
                    refusal.times -= 1
                return refusal.error
        return None

    def _report(self, rec: Record, ack: asyncio.Future[DeliveryReport]) -> None:
        if ack.done():
            return
        error = self._refusal(rec, on_enqueue=False)
        if error is None and rec.topic not in self.topics:
            error = UnknownTopicError(f"{rec.topic}: Broker: Unknown topic or partition",
                                      permanent=True)
        if isinstance(error, asyncio.CancelledError):
            ack.cancel()
            return
        if error is not None:
            ack.set_exception(error)
            return
        log = self.logs.setdefault(rec.topic, [])
        stored = Record(rec.topic, 0, len(log), rec.key, rec.value, rec.headers)
        log.append(stored)
        ack.set_result(DeliveryReport(rec.topic, 0, stored.offset))
        self._arrived.set()
        route = self.routes.get(rec.topic)
        if route is not None:
            result = route(stored)
            if asyncio.iscoroutine(result):
                asyncio.get_running_loop().create_task(result)

    async def wait_arrival(self, timeout: float) -> None:
        """Wait until a record lands (any topic), at most `timeout` seconds."""
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            pass


class FakeReplyConsumer:
    """Reads one topic's log in `FakeProducer`; assigns its partition on the first poll, as
    librdkafka calls `on_assign` from inside `poll`."""

    def __init__(self, producer: FakeProducer, group_id: str, *,
                 on_assign: Callable[[list[tuple[str, int]]], None], **overrides: Any) -> None:
        self._producer = producer
        self.group_id = group_id
        self.overrides = overrides
        self._on_assign = on_assign
        self.topics: list[str] = []
        self._position = 0
        self._assigned = False
        self.closed = False
        self.fail_next: BaseException | None = None

    async def subscribe(self, topics: Iterable[str]) -> None:
        self.topics = list(topics)

    async def poll(self, max_records: int = 500, timeout: float = 0.1) -> list[Record]:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if not self._assigned and self.topics:
            self._assigned = True
            self._on_assign([(self.topics[0], 0)])
        log = self._producer.logs.get(self.topics[0], []) if self.topics else []
        if self._position >= len(log):
            await self._producer.wait_arrival(timeout)
            log = self._producer.logs.get(self.topics[0], []) if self.topics else []
        batch = log[self._position:self._position + max_records]
        self._position += len(batch)
        return batch

    async def close(self) -> None:
        self.closed = True


class FakeTopicAdmin:
    """`KafkaAdmin` for request-reply: creating a topic makes the producer know it."""

    def __init__(self, producer: FakeProducer, *, fail_delete: bool = False) -> None:
        self._producer = producer
        self.fail_delete = fail_delete
        self.deleted: list[str] = []
        self.created: list[tuple[list[str], dict[str, Any]]] = []
        self.configs: list[Any] = []

    def __call__(self, config: Any) -> FakeTopicAdmin:
        self.configs.append(config)
        return self

    async def create_topics(self, topics: Iterable[str], **options: Any) -> None:
        self.created.append((list(topics), options))
        self._producer.topics.update(topics)

    async def topics(self) -> list[str]:
        return sorted(self._producer.topics)

    async def delete_topics(self, topics: Iterable[str]) -> None:
        if self.fail_delete:
            raise MessagingError("delete refused")
        for topic in topics:
            self.deleted.append(topic)
            self._producer.topics.discard(topic)
