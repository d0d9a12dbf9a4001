"""`python -m tests.integration.procs.ride_projector DB_URL BOOTSTRAP TOPIC CRASH_AFTER`: runs
the ride projections in batches of 5; the trips projection kills the process (SIGKILL) once
it has applied ride CRASH_AFTER's completion and before that transaction commits."""

from __future__ import annotations

import asyncio
import sys

from core.config import KafkaConfig
from core.db.engine import Database
from core.messaging.dlq import InMemoryDeadLetterSink
from core.projections import ProjectionRunner
from tests.helpers.projections import ride_projections


async def main(url: str, bootstrap: str, topic: str, crash_after: str) -> None:
    db = Database(url)
    kafka = KafkaConfig(bootstrap, "ride-projector", "unused")
    runners = [ProjectionRunner(p, db, kafka, dead_letters=InMemoryDeadLetterSink(), batch=5)
               for p in ride_projections(topic, crash_after=crash_after)]
    for runner in runners:
        await runner.start()
    print("started", flush=True)
    await asyncio.Event().wait()  # the crash ends it


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
