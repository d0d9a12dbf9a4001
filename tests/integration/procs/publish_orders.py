"""A separate publisher process: `python -m tests.integration.procs.publish_orders BOOTSTRAP
TOPIC KEYS PER_KEY`; publishes OrderPlaced events with seq 0..PER_KEY-1 for each key,
interleaving keys, and prints how many were acknowledged."""

from __future__ import annotations

import asyncio
import sys

from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus
from tests.helpers import order_registry, placed


async def main(bootstrap: str, topic: str, keys: int, per_key: int) -> None:
    bus = KafkaEventBus(KafkaConfig(bootstrap, "publisher", "unused"), order_registry())
    await bus.start()
    try:
        events = [placed(f"order-{k}", seq=s) for s in range(per_key) for k in range(keys)]
        await bus.publish_many(topic, events)
        print(f"acknowledged {len(events)}", flush=True)
    finally:
        await bus.stop()


if __name__ == "__main__":
    bootstrap, topic, keys, per_key = sys.argv[1:5]
    asyncio.run(main(bootstrap, topic, int(keys), int(per_key)))
