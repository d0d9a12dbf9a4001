"""`python -m tests.integration.procs.saga_orchestrator DB_URL BOOTSTRAP GROUP TOPIC REPLIES N`:
the orchestrating side of the trip saga (tests/saga_rig.py) as its own process. With N > 0 it
starts N sagas planned by `planned(Random(N), N)` and prints `begun`; it then runs (replies,
deadlines, its outbox relay) until killed. Prints `ready` once its consumer is assigned."""

from __future__ import annotations

import asyncio
import random
import signal
import sys

from core.config import KafkaConfig
from tests.helpers import unique
from tests.saga_rig import Node, planned, trip_saga


async def main(url: str, bootstrap: str, group: str, topic: str, replies: str, n: int) -> None:
    saga = trip_saga(topic, replies, timeout=5.0, comp_timeout=2.5)
    node = await Node(url, KafkaConfig(bootstrap, unique("orchestrator"), group), saga,
                      participate=False).start()
    print("ready", flush=True)
    assert node.sagas is not None
    trips = planned(random.Random(n), n)
    for chunk in range(0, n, 50):
        async with node.db.transaction() as session:
            for data in trips[chunk:chunk + 50]:
                await node.sagas.begin(session, saga, data)
    if n:
        print("begun", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await node.stop()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6], int(sys.argv[6])))
