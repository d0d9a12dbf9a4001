"""The consumer `bench.memory` measures: a real `KafkaEventBus` consumer in its own process,
whose handler can be told to hold every record (await an `asyncio.Event`), so records stay
in flight for as long as the parent wants to look at the process's memory.

    python -m bench.memory.consumer BOOTSTRAP TOPIC GROUP

Commands on stdin, one a line; each is answered by one line on stdout:

    hold       handlers wait from now on             → "ok"
    release    waiting handlers go on, new ones too  → "ok"
    status     → "status <in flight> <handled>"
    quit       stops the bus                          → "bye"

"ready" is printed once the bus is started (its topic created, the group joining).
"""

from __future__ import annotations

import asyncio
import sys

from bench.common.payload import BenchEvent
from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus

MAX_IN_FLIGHT = 1000
"""The bus's default, spelled out: the in-flight phase fills it exactly (one partition, so
the per-partition share is all of it)."""


async def main(bootstrap: str, topic: str, group: str) -> None:
    gate = asyncio.Event()
    gate.set()
    in_flight = handled = 0

    async def handle(event: BenchEvent) -> None:
        nonlocal in_flight, handled
        in_flight += 1
        try:
            await gate.wait()
        finally:
            in_flight -= 1
        handled += 1

    config = KafkaConfig(bootstrap_servers=bootstrap, client_id="bench-memory-consumer",
                         consumer_group=group, topic_partitions=1)
    bus = KafkaEventBus(config, max_in_flight=MAX_IN_FLIGHT)
    bus.events.register(BenchEvent)
    bus.subscribe(topic, handle)
    await bus.start()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say("ready")
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "hold":
                gate.clear()
                say("ok")
            elif line == "release":
                gate.set()
                say("ok")
            elif line == "status":
                say(f"status {in_flight} {handled}")
            elif line == "quit":
                break
            else:
                say(f"error unknown command {line!r}")
    finally:
        gate.set()
        await bus.stop()
        say("bye")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
