"""Reply topics: their names, and the janitor that deletes the ones dead clients left behind.

Each `RequestReplyClient` owns `replies.<instance id>`, read by the consumer group
`replies.<instance id>.reader`, and deletes it on a clean stop. A client that crashes (or is
killed) cannot, and instance ids are new per process, so without a janitor every crash leaves
a topic for good.

How an orphan is recognised, without clocks or extra records: its reader group has no active
member (a live client's reader is always a member; a killed one's is dropped by the broker
after the consumer's session timeout), and that has held at every sweep for at least `grace`
seconds, across at least two sweeps. The grace covers a client between creating its topic and
joining its group (seconds), and a live client briefly out of its group (a rebalance, a
network blip). A group the broker could not describe counts as live. Every client runs a
janitor; two deleting the same topic is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.config import KafkaConfig
from core.messaging.kafka_client import KafkaAdmin, group_member_counts
from core.tasks import periodically

log = logging.getLogger(__name__)

REPLY_TOPIC_PREFIX = "replies."
DEFAULT_GRACE = 600.0
DEFAULT_SWEEP_INTERVAL = 60.0


def reply_topic(instance_id: str) -> str:
    return f"{REPLY_TOPIC_PREFIX}{instance_id}"


def reader_group(topic: str) -> str:
    """The consumer group that reads reply topic `topic`; its members show the client lives."""
    return f"{topic}.reader"


class ReplyTopicJanitor:
    """Deletes reply topics whose reader group has had no member for `grace` seconds.

    `sweep()` looks once; `run()` sweeps every `interval` seconds until cancelled. Never
    deletes `own_topic`. One event loop; not for concurrent `sweep()` calls.
    """

    def __init__(
        self,
        config: KafkaConfig,
        own_topic: str,
        *,
        grace: float = DEFAULT_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if grace < 0:
            raise ValueError("grace must not be negative")
        self.config = config
        self.own_topic = own_topic
        self.grace = grace
        self._clock = clock
        # Made on the first sweep: a client that is never started should hold no connection.
        self._admin: KafkaAdmin | None = None
        self._memberless_since: dict[str, float] = {}

    async def sweep(self) -> list[str]:
        """Delete the reply topics found orphaned; returns their names."""
        if self._admin is None:
            self._admin = KafkaAdmin(self.config)
        topics = [t for t in await self._admin.topics()
                  if t.startswith(REPLY_TOPIC_PREFIX) and t != self.own_topic]
        members = await group_member_counts(self.config, [reader_group(t) for t in topics])
        now = self._clock()
        seen_before, self._memberless_since = self._memberless_since, {}
        orphans = []
        for topic in topics:
            if members.get(reader_group(topic)) != 0:  # a member, or unknown: alive
                continue
            since = seen_before.get(topic)
            if since is None:  # first sighting: never deleted at once
                self._memberless_since[topic] = now
                continue
            self._memberless_since[topic] = since
            if now - since >= self.grace:
                orphans.append(topic)
        if orphans:
            await self._admin.delete_topics(orphans)
            for topic in orphans:
                del self._memberless_since[topic]
            log.info("deleted reply topics left by stopped clients: %s", ", ".join(orphans))
        return orphans

    async def run(self, interval: float = DEFAULT_SWEEP_INTERVAL) -> None:
        """Sweep now and every `interval` seconds until cancelled; a failed sweep is logged."""
        await periodically(self.sweep, interval, log=log, level=logging.WARNING,
                           failed=f"reply topic sweep failed; trying again in {interval:.0f}s")
