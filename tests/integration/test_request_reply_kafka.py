"""Request-reply over a real broker: round trip, remote error, timeout."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import BaseModel

from core.config import KafkaConfig
from core.messaging.events import IntegrationEvent
from core.messaging.exceptions import RemoteHandlerError, RequestTimeoutError
from core.messaging.kafka_client import KafkaAdmin
from core.messaging.request_reply import RequestReplyClient, RequestResponder
from tests.integration.conftest import BusFactory
from tests.support import unique

pytestmark = pytest.mark.kafka


class QuoteQuery(BaseModel):
    distance_km: float


class QuoteAnswer(BaseModel):
    price_cents: int


class GetQuote(IntegrationEvent[QuoteQuery]):
    EVENT_TYPE = "pricing.get_quote"


class Quote(IntegrationEvent[QuoteAnswer]):
    EVENT_TYPE = "pricing.quote"


async def test_round_trip_remote_error_and_timeout(
    make_bus: BusFactory, kafka_config: KafkaConfig
) -> None:
    requests_topic = unique("pricing.requests")
    await KafkaAdmin(kafka_config).create_topics([requests_topic], partitions=3)

    server = make_bus()
    responder = RequestResponder(server.producer, server.events)

    @responder.responds(GetQuote)
    async def quote(request: GetQuote) -> Quote:
        if request.data.distance_km < 0:
            raise ValueError("distance must not be negative")
        return request.caused(Quote, QuoteAnswer(price_cents=int(request.data.distance_km * 150)))

    server.subscribe(requests_topic, responder.handlers)
    await server.start()
    await server.consumers[server.config.consumer_group].wait_assigned()

    caller = make_bus()
    caller.events.register(Quote)
    await caller.start()
    client = RequestReplyClient(kafka_config, caller.producer, caller.events,
                                instance_id=unique("caller"))
    await client.start()
    try:
        request = GetQuote(data=QuoteQuery(distance_km=10), correlation_id="req-42")
        reply = await client.send_request(requests_topic, request, timeout=20)
        assert isinstance(reply, Quote) and reply.data.price_cents == 1500
        assert reply.causation_id == str(request.event_id)
        assert reply.correlation_id == "req-42"

        many = await asyncio.gather(*[
            client.send_request(requests_topic, GetQuote(data=QuoteQuery(distance_km=d)), 20)
            for d in range(1, 21)
        ])
        assert [r.data.price_cents for r in many] == [d * 150 for d in range(1, 21)]

        with pytest.raises(RemoteHandlerError, match="distance must not be negative"):
            await client.send_request(requests_topic,
                                      GetQuote(data=QuoteQuery(distance_km=-1)), timeout=20)

        nobody = unique("nobody.listens")
        await KafkaAdmin(kafka_config).create_topics([nobody], partitions=1)
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match=r"within 0\.5s"):
            await client.send_request(nobody, GetQuote(data=QuoteQuery(distance_km=1)), 0.5)
        assert time.monotonic() - started < 5
    finally:
        await client.stop()
    assert client.reply_topic not in await KafkaAdmin(kafka_config).topics()
