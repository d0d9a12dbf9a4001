"""`python -m tests.integration.procs.outbox_crash DB_URL TOPIC N`: commits N deposits, each
with its outbox event in the same transaction, then dies by SIGKILL before any relay runs:
the events are committed but not published."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from sqlalchemy import insert

from core.db.engine import Database
from core.messaging.outbox import OutboxWriter
from core.messaging.serialization import EventSerializer
from tests.outbox_service import accounts, deposit, metadata, registry


async def main(url: str, topic: str, n: int) -> None:
    db = Database(url)
    writer = OutboxWriter(metadata, EventSerializer(registry()))
    for i in range(n):
        async with db.transaction() as session:
            await session.execute(insert(accounts).values(id=f"acct-{i}", balance=10))
            await writer.add(session, topic, deposit(f"acct-{i}", seq=0))
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
