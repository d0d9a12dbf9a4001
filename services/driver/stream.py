"""The live location feed: one reader of `driver.locations` per instance, fanned out to the
Server-Sent-Event subscribers of each driver.

The reader is a `TopicFollower` from the topic's end, outside the service's consumer group:
a group would split the partitions between instances, and a client streaming from one
instance would miss the reports read by the others. Each subscriber has a bounded queue; when
a client reads slower than its driver reports, the oldest queued location is dropped (only the
latest matters), so memory stays bounded whatever the client does. A report older than the
last one a subscriber got is not sent (reports can arrive out of order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import datetime

from core.config import KafkaConfig
from core.messaging import EventSerializer, MessagingError, Record, TopicFollower
from core.runtime import RuntimeKey
from core.tasks import cancel_and_wait
from services.driver.events import LOCATIONS_TOPIC, DriverLocationReported, LocationReportedData

log = logging.getLogger(__name__)

POLL_RETRY = 1.0
"""Seconds between attempts when reading the topic fails."""


class Subscription:
    """One client's feed of one driver's locations; iterate it until it ends (hub stopped)."""

    def __init__(self, driver_id: str, size: int) -> None:
        self.driver_id = driver_id
        self._queue: asyncio.Queue[LocationReportedData | None] = asyncio.Queue(size)
        self._last: datetime | None = None
        self.dropped = 0
        """Locations dropped because the client did not keep up."""

    def offer(self, location: LocationReportedData) -> None:
        if self._last is not None and location.recorded_at <= self._last:
            return
        self._last = location.recorded_at
        self._put(location)

    def close(self) -> None:
        self._put(None)

    def _put(self, item: LocationReportedData | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    async def get(self, timeout: float) -> LocationReportedData | None:
        """The next location; None once the hub closed the subscription, or after `timeout`
        seconds without one."""
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None


class LocationHub:
    """Reads `topic` from its end and hands each report to its driver's subscribers.

    `start` returns once the reader is positioned at the end of every partition (so a report
    published after a subscription opens reaches it); `stop` ends every subscription.
    Subscribing and offering run on the event loop only: no locks.
    """

    def __init__(self, config: KafkaConfig, serializer: EventSerializer, *, queue_size: int,
                 topic: str = LOCATIONS_TOPIC) -> None:
        self._follower = TopicFollower(config, topic, from_end=True)
        self._serializer = serializer
        self._queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._positioned = asyncio.Event()
        self.delivered = 0

    async def start(self, timeout: float = 10.0) -> None:
        await self._follower.start(timeout)
        self._task = asyncio.create_task(self._read(), name="driver-location-hub")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._positioned.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.close()
        self._subscribers.clear()
        await self._follower.close()

    @property
    def caught_up(self) -> bool:
        return self._follower.caught_up

    def subscribe(self, driver_id: str) -> Subscription:
        subscription = Subscription(driver_id, self._queue_size)
        self._subscribers[driver_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscribers.get(subscription.driver_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscribers[subscription.driver_id]

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def _read(self) -> None:
        while True:
            try:
                records = await self._follower.poll(max_records=500, timeout=0.2)
            except MessagingError as exc:
                log.warning("location stream: cannot read %s: %s", LOCATIONS_TOPIC, exc)
                await asyncio.sleep(POLL_RETRY)
                continue
            if self._follower.caught_up:
                self._positioned.set()
            for record in records:
                self._dispatch(record)

    def _dispatch(self, record: Record) -> None:
        """Decode only records of a driver someone watches (the key is the driver id; a
        record without a key is decoded to find out)."""
        if not self._subscribers:
            return
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        if key is not None and key not in self._subscribers:
            return
        try:
            event = self._serializer.deserialize(record.value, record.headers)
        except Exception as exc:  # poison: another producer's mistake, not the stream's end
            log.warning("location stream: undecodable record at %s/%d@%d: %s", record.topic,
                        record.partition, record.offset, exc)
            return
        if not isinstance(event, DriverLocationReported):
            return
        for subscription in self._subscribers.get(event.data.driver_id, ()):
            subscription.offer(event.data)
            self.delivered += 1


LOCATION_HUB = RuntimeKey("location_hub", LocationHub)
"""This instance's one live feed, shared by its streaming routes."""
