"""`python -m tests.integration.procs.inbox_consumer DB_URL BOOTSTRAP TOPIC GROUP MODE`:
a consumer whose handler records an effect through the inbox transaction.

MODE `crash-in-handler`: after writing the effect, before the transaction commits, the
process SIGKILLs itself. MODE `normal`: handles everything; offsets are committed only a
minute later, so a test that kills it after the effect is visible makes Kafka redeliver."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from sqlalchemy import insert

from core.config import KafkaConfig
from core.db.engine import Database
from core.messaging.dispatch import Outcome
from core.messaging.event_bus import KafkaEventBus
from core.messaging.handlers import HandlerRegistry
from core.messaging.inbox import DatabaseIdempotencyStore
from core.messaging.types import MessageContext
from tests.outbox_service import MoneyDeposited, effects, metadata, registry

HANDLER = "deposit-applier"


async def main(url: str, bootstrap: str, topic: str, group: str, mode: str) -> None:
    db = Database(url)
    bus = KafkaEventBus(KafkaConfig(bootstrap, f"inbox-{os.getpid()}", group), registry(),
                        idempotency=DatabaseIdempotencyStore(db, metadata),
                        # offsets stay uncommitted for a minute: a kill means redelivery
                        **{"auto.commit.interval.ms": 60_000})

    async def apply(event: MoneyDeposited, ctx: MessageContext) -> None:
        await ctx.session.execute(insert(effects).values(
            event_id=str(event.event_id), account_id=event.data.account_id, seq=event.data.seq))
        if mode == "crash-in-handler":
            await ctx.session.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    handlers = HandlerRegistry(bus.events)
    handlers.add(MoneyDeposited, apply, name=HANDLER)
    bus.subscribe(topic, handlers)
    await bus.start()
    consumer, reported = bus.consumers[group], -1
    while True:  # report deliveries (handled or skipped as a duplicate) for the test to see
        done = consumer.processed[Outcome.HANDLED]
        if done != reported:
            print(f"processed={done}", flush=True)
            reported = done
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
