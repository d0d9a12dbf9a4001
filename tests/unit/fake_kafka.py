"""A stand-in for `KafkaConsumer` and `KafkaAdmin`, for unit tests of `EventConsumer`'s lanes.

It keeps what `EventConsumer` relies on from the real client: `poll` runs on one thread of its
own, rebalance callbacks are called on that thread inside `poll` (so `on_revoke` blocks it
until the loop has drained), paused partitions bring no records, and stored offsets are kept.
The real client is tested against a real broker (tests/integration); these tests pin down the
consumer's own logic (order, flow control, offsets, rebalances) fast enough to mutate.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.messaging.errors import ConsumerFailedError
from core.messaging.serialization import EventSerializer
from core.messaging.types import Record
from tests.helpers import OrderPlaced, order_registry

TP = tuple[str, int]
_serializer = EventSerializer(order_registry())


def record(topic: str, partition: int, offset: int, event: OrderPlaced) -> Record:
    value, headers = _serializer.serialize(event)
    return Record(topic, partition, offset, event.aggregate_id.encode(), value, headers)


class FakeBroker:
    """The partitions' logs and what the consumer did to them; one consumer at a time."""

    def __init__(self, partitions: Iterable[TP], *, assign: bool = True) -> None:
        self.assign = assign
        self.logs: dict[TP, list[Record]] = {tp: [] for tp in partitions}
        self.stored: dict[TP, int] = {}
        self.store_calls: list[dict[TP, int]] = []
        self.revoked_commits: list[dict[TP, int]] = []
        self.paused: set[TP] = set()
        self.pause_calls: list[list[TP]] = []
        self.created_topics: list[str] = []
        self.configs: list[Any] = []  # the config each client and admin was built with
        self.clients: list[FakeConsumer] = []
        self.max_records: list[int] = []

    def append(self, partition: TP, event: OrderPlaced) -> Record:
        log = self.logs[partition]
        rec = record(partition[0], partition[1], len(log), event)
        log.append(rec)
        return rec

    @property
    def client(self) -> FakeConsumer:
        return self.clients[-1]

    def consumer_factory(self) -> Callable[..., FakeConsumer]:
        def build(config: Any, group_id: str, **kwargs: Any) -> FakeConsumer:
            self.configs.append(config)
            client = FakeConsumer(self, group_id, **kwargs)
            self.clients.append(client)
            return client
        return build

    def admin_factory(self) -> Callable[[Any], FakeAdmin]:
        def build(config: Any) -> FakeAdmin:
            self.configs.append(config)
            return FakeAdmin(self)
        return build


class FakeAdmin:
    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker

    async def create_topics(self, topics: Iterable[str]) -> None:
        self._broker.created_topics.extend(topics)


class FakeConsumer:
    """Assigns every partition on the first poll; `revoke`, `lose` and `fail` take effect on
    the next poll, on the consumer thread, as librdkafka's callbacks do."""

    def __init__(
        self,
        broker: FakeBroker,
        group_id: str,
        *,
        on_assign: Callable[[list[TP]], None],
        on_revoke: Callable[[list[TP]], dict[TP, int]],
        on_lost: Callable[[list[TP]], None],
        **overrides: Any,
    ) -> None:
        self._broker = broker
        self.group_id = group_id
        self.overrides = overrides
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._executor = ThreadPoolExecutor(1)
        self._events: deque[tuple[str, Any]] = deque(
            [("assign", list(broker.logs))] if broker.assign else [])
        self._position: dict[TP, int] = {}
        self.subscribed: list[str] = []
        self.member = ""  # the coordinator's id for it: set on assignment, cleared when lost
        self.abandoned: float | bool = False  # the timeout it was abandoned with
        self.closed = False
        self.polls = 0
        self.polled = threading.Event()

    def assign(self, partitions: list[TP]) -> None:
        self._events.append(("assign", partitions))

    def revoke(self, partitions: list[TP]) -> None:
        self._events.append(("revoke", partitions))

    def lose(self, partitions: list[TP]) -> None:
        self._events.append(("lost", partitions))

    def fail(self, error: BaseException) -> None:
        """The next poll raises `ConsumerFailedError` (fatal), as the real client does."""
        self._events.append(("fail", error))

    def hiccup(self, error: BaseException) -> None:
        """The next poll raises `error` once (an unexpected, passing failure)."""
        self._events.append(("error", error))

    async def subscribe(self, topics: Iterable[str]) -> None:
        self.subscribed = list(topics)

    async def poll(
        self,
        max_records: int = 500,
        timeout: float = 0.1,
        store: Mapping[TP, int] | None = None,
        pause: Iterable[TP] = (),
        resume: Iterable[TP] = (),
    ) -> list[Record]:
        # A short poll keeps stop() and flow control responsive (the real poll waits this long).
        assert 0 < timeout <= 0.1, f"poll timeout {timeout}"
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(
            self._executor, self._poll, max_records, store, list(pause), list(resume))
        if not records:
            await asyncio.sleep(0.001)  # the real poll waits up to `timeout` for records
        return records

    def _poll(self, max_records: int, store: Mapping[TP, int] | None, pause: list[TP],
              resume: list[TP]) -> list[Record]:
        broker = self._broker
        self.polls += 1
        self.polled.set()
        broker.max_records.append(max_records)
        if store:
            self._store(store)
        if pause:
            broker.pause_calls.append(pause)
        broker.paused.update(pause)
        broker.paused.difference_update(resume)
        while self._events:
            kind, arg = self._events.popleft()
            if kind == "assign":
                for tp in arg:
                    self._position[tp] = broker.stored.get(tp, 0)
                self.member = f"{self.group_id}-member-{len(broker.clients)}"
                self._on_assign(arg)
            elif kind == "revoke":
                commits = self._on_revoke(arg)
                broker.revoked_commits.append(dict(commits))
                broker.stored.update(commits)
                for tp in arg:
                    self._position.pop(tp, None)
            elif kind == "lost":
                self.member = ""
                self._on_lost(arg)
                for tp in arg:
                    self._position.pop(tp, None)
            elif kind == "error":
                raise arg
            else:
                raise ConsumerFailedError(str(arg))
        out: list[Record] = []
        for tp, position in sorted(self._position.items()):
            if tp in broker.paused:
                continue
            batch = broker.logs[tp][position:position + max_records - len(out)]
            self._position[tp] = position + len(batch)
            out.extend(batch)
        return out

    def _store(self, offsets: Mapping[TP, int]) -> None:
        self._broker.store_calls.append(dict(offsets))
        self._broker.stored.update(offsets)

    async def store_offsets(self, offsets: Mapping[TP, int]) -> None:
        if offsets:
            self._store(offsets)

    async def member_id(self) -> str | None:
        return self.member

    async def abandon(self, timeout: float) -> bool:
        self.abandoned = timeout
        await self.close()
        return True

    async def close(self) -> None:
        self.closed = True
        self._executor.shutdown(wait=False)


class FakeInspector:
    """`GroupInspector` on the fake broker: the committed (stored) offset and the end of
    each partition's log; `down` makes every question fail, as with the broker away."""

    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker
        self.down = False
        self.closed = False

    async def lag(self, topics: Iterable[str]) -> dict[TP, tuple[int, int]]:
        if self.down:
            raise RuntimeError("no broker answers")
        wanted = set(topics)
        return {tp: (self._broker.stored.get(tp, 0), len(log))
                for tp, log in self._broker.logs.items() if tp[0] in wanted}

    async def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Keeps what was produced (dead letters go through `produce`)."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes | None, Any]] = []

    async def produce(self, topic: str, value: bytes | None, key: bytes | None,
                      headers: Any = None) -> None:
        self.produced.append((topic, value, key, headers))
