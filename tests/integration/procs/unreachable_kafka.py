"""`python -m tests.integration.procs.unreachable_kafka BOOTSTRAP`: a producer of
`core.messaging.kafka_client` pointed at a broker nobody runs, logging as a served process
does (`core.serving.configure_logging`: LOG_FORMAT, LOG_LEVEL), until it is killed; librdkafka
complains about the refused connections through the `librdkafka` logger."""

from __future__ import annotations

import asyncio
import sys

from core.config import KafkaConfig
from core.messaging.kafka_client import KafkaProducer
from core.serving import configure_logging


async def main(bootstrap: str) -> None:
    producer = KafkaProducer(KafkaConfig(bootstrap_servers=bootstrap, client_id="unreachable",
                                         consumer_group="unreachable"))
    await producer.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    configure_logging()
    asyncio.run(main(sys.argv[1]))
