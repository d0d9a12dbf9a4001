"""A separate consumer process: `python -m tests.integration.procs.consume_orders BOOTSTRAP
TOPIC GROUP OUT_FILE`; appends `partition event_id` per handled event to OUT_FILE (flushed each
time, so a SIGKILL loses nothing that was written) and prints `assigned` once it owns a
partition."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus
from core.messaging.types import MessageContext
from tests.helpers import OrderPlaced, order_registry


async def main(bootstrap: str, topic: str, group: str, out_path: str) -> None:
    bus = KafkaEventBus(KafkaConfig(bootstrap, f"consumer-{os.getpid()}", group),
                        order_registry())
    out = open(out_path, "a", buffering=1)  # noqa: ASYNC230 - once, before any work

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        out.write(f"{ctx.record.partition} {event.event_id}\n")

    bus.subscribe(topic, handle)
    await bus.start()
    await bus.consumers[group].wait_assigned(60)
    print("assigned", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await bus.stop()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
