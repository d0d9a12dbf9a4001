"""Publishes a greeting a second to `hello.events`, keyed by one of three senders."""

from __future__ import annotations

import asyncio
import itertools
import logging

from core.config import get_settings
from core.messaging.event_bus import KafkaEventBus
from core.messaging.kafka_client import KafkaAdmin
from examples.hello.events import TOPIC, Greeting, GreetingSent, events

log = logging.getLogger("hello.publisher")


async def main() -> None:
    settings = get_settings()
    await KafkaAdmin(settings.kafka()).create_topics([TOPIC], partitions=3)
    bus = KafkaEventBus(settings.kafka(), events)
    await bus.start()
    try:
        for n in itertools.count(1):
            sender = ("ada", "grace", "linus")[n % 3]
            event = GreetingSent(aggregate_id=sender, service_name="hello-publisher",
                                 data=Greeting(number=n, text=f"hello #{n} from {sender}"))
            report = await bus.publish(TOPIC, event)
            log.info("published %s -> partition %d offset %d", event.data.text,
                     report.partition, report.offset)
            await asyncio.sleep(1.0)
    finally:
        await bus.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(main())
