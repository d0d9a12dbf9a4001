"""One consumer process of `bench.horizontal`: a real `KafkaEventBus` consumer whose handler
awaits 5 ms of I/O (`asyncio.sleep(0.005)`) and counts what it handled.

    python -m bench.horizontal.worker BOOTSTRAP TOPIC GROUP MAX_IN_FLIGHT

"ready" on stdout once the bus is started; then, for each "status" line on stdin, one line
"status <handled>"; "quit" stops the bus ("bye").
"""

from __future__ import annotations

import asyncio
import sys

from bench.common.payload import BenchEvent
from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus

IO_SECONDS = 0.005


async def main(bootstrap: str, topic: str, group: str, max_in_flight: int) -> None:
    handled = 0

    async def handle(event: BenchEvent) -> None:
        nonlocal handled
        await asyncio.sleep(IO_SECONDS)
        handled += 1

    config = KafkaConfig(bootstrap_servers=bootstrap, client_id=f"bench-horizontal-{group}",
                         consumer_group=group, topic_partitions=6)
    bus = KafkaEventBus(config, max_in_flight=max_in_flight)
    bus.events.register(BenchEvent)
    bus.subscribe(topic, handle)
    await bus.start()
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say("ready")
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "status":
                say(f"status {handled}")
            elif line == "quit":
                break
    finally:
        await bus.stop()
        say("bye")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
