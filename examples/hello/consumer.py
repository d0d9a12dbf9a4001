"""Consumes `hello.events` in its own group and logs each greeting it handles."""

from __future__ import annotations

import asyncio
import logging
import signal

from core.config import get_settings
from core.messaging.event_bus import KafkaEventBus
from core.messaging.handlers import HandlerRegistry
from core.messaging.types import MessageContext
from examples.hello.events import TOPIC, GreetingSent, events

log = logging.getLogger("hello.consumer")
handlers = HandlerRegistry(events)


@handlers.handles(GreetingSent)
async def greet(event: GreetingSent, ctx: MessageContext) -> None:
    log.info("handled %r (partition %d offset %d)", event.data.text, ctx.record.partition,
             ctx.record.offset)


async def main() -> None:
    bus = KafkaEventBus(get_settings().kafka(), events)
    bus.subscribe(TOPIC, handlers, group_id="hello-consumer")
    await bus.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await bus.stop()  # finishes in-flight greetings, commits, leaves the group


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(main())
