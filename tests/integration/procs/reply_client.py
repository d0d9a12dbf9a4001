"""A request-reply client in its own process, to be killed: `python -m
tests.integration.procs.reply_client BOOTSTRAP INSTANCE_ID`; prints `ready` once its reply
topic is read, then waits for SIGKILL (it has no clean way out on purpose)."""

from __future__ import annotations

import asyncio
import sys

from core.config import KafkaConfig
from core.messaging.kafka_client import KafkaProducer
from core.messaging.request_reply import RequestReplyClient
from core.messaging.serialization import EventRegistry


async def main(bootstrap: str, instance_id: str) -> None:
    config = KafkaConfig(bootstrap, f"reply-client-{instance_id}", "unused")
    producer = KafkaProducer(config)
    await producer.start()
    client = RequestReplyClient(config, producer, EventRegistry(), instance_id=instance_id,
                                orphan_grace=None)
    await client.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
