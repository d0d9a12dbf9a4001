"""Request-reply over a real broker: round trip, remote error, timeouts, the same request twice,
replies out of order, the reply topic's replication, orphaned reply topics, stop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from core.config import KafkaConfig, Settings
from core.messaging.errors import (
    MessagingError,
    RemoteHandlerError,
    RequestCancelledError,
    RequestTimeoutError,
)
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer
from core.messaging.reply_topics import ReplyTopicJanitor
from core.messaging.request_reply import RequestReplyClient, RequestResponder
from core.messaging.serialization import EventRegistry
from core.tracing import trace_handlers, tracer
from core.tracing.testing import recording
from tests.helpers import eventually, unique
from tests.helpers.events import GetQuote, Quote, QuoteQuery, priced
from tests.integration.conftest import BusFactory

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

NO_HANG = 15.0  # seconds; bounds awaits that must not block, far beyond a prompt answer


@pytest.fixture
async def requests_topic(kafka_config: KafkaConfig) -> str:
    name = unique("pricing.requests")
    await KafkaAdmin(kafka_config).create_topics([name], partitions=3)
    return name


@pytest.fixture
async def serve(make_bus: BusFactory, requests_topic: str) -> Callable[..., Awaitable[None]]:
    """Starts a responder on `requests_topic` that answers with the given function (options
    go to the responder's bus)."""

    async def start(answer: Callable[[GetQuote], Awaitable[Quote]], **options: Any) -> None:
        server = make_bus(**options)
        responder = RequestResponder(server.producer, server.events)
        responder.responds(GetQuote)(answer)
        server.subscribe(requests_topic, responder.handlers)
        await server.start()
        await server.consumers[server.config.consumer_group].wait_assigned()

    return start


@pytest.fixture
async def producer(kafka_config: KafkaConfig) -> AsyncIterator[KafkaProducer]:
    producer = KafkaProducer(kafka_config)
    await producer.start()
    yield producer
    await producer.stop(timeout=1)  # a request to a missing topic may still be held


@pytest.fixture
async def client(kafka_config: KafkaConfig, producer: KafkaProducer
                 ) -> AsyncIterator[RequestReplyClient]:
    events = EventRegistry()
    events.register(Quote)
    client = RequestReplyClient(kafka_config, producer, events, instance_id=unique("caller"))
    await client.start()
    yield client
    await client.stop()


async def test_round_trip_remote_error_and_timeout(
    serve: Any, client: RequestReplyClient, requests_topic: str, kafka_config: KafkaConfig
) -> None:
    async def quote(request: GetQuote) -> Quote:
        if request.data.distance_km < 0:
            raise ValueError("distance must not be negative")
        return priced(request)

    await serve(quote)
    request = GetQuote(data=QuoteQuery(distance_km=10), correlation_id="req-42")
    reply = await client.send_request(requests_topic, request, timeout=20)
    assert isinstance(reply, Quote) and reply.data.price_cents == 1500
    assert reply.causation_id == str(request.event_id)
    assert reply.correlation_id == "req-42"

    with pytest.raises(RemoteHandlerError, match="distance must not be negative"):
        await client.send_request(requests_topic,
                                  GetQuote(data=QuoteQuery(distance_km=-1)), timeout=20)

    nobody = unique("nobody.listens")
    await KafkaAdmin(kafka_config).create_topics([nobody], partitions=1)
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError, match=r"no reply to .* within 0\.5s"):
        await client.send_request(nobody, GetQuote(data=QuoteQuery(distance_km=1)), 0.5)
    assert time.monotonic() - started < 5
    assert client.waiting == 0

    await client.stop()
    assert client.reply_topic not in await KafkaAdmin(kafka_config).topics()


async def test_the_timeout_covers_sending_to_a_topic_that_does_not_exist(
    client: RequestReplyClient,
) -> None:
    # The broker creates no topics on its own: the producer holds this request while it waits
    # for the topic's metadata (30 s and more), so only a timeout on the whole call ends it.
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError, match=r"did not acknowledge .* within 2s"):
        await asyncio.wait_for(
            client.send_request(unique("missing"), GetQuote(data=QuoteQuery(distance_km=1)), 2),
            NO_HANG,
        )
    assert time.monotonic() - started < 3
    assert client.waiting == 0


async def test_one_request_sent_twice_gets_two_replies(
    serve: Any, client: RequestReplyClient, requests_topic: str
) -> None:
    handled: list[str] = []

    async def quote(request: GetQuote) -> Quote:
        handled.append(str(request.event_id))
        return priced(request)

    await serve(quote)
    request = GetQuote(data=QuoteQuery(distance_km=3))

    together = await asyncio.gather(client.send_request(requests_topic, request, 10),
                                    client.send_request(requests_topic, request, 10))
    assert [r.data.price_cents for r in together] == [450, 450]  # type: ignore[attr-defined]
    again = await client.send_request(requests_topic, request, 10)
    assert again.data.price_cents == 450  # type: ignore[attr-defined]
    assert handled == [str(request.event_id)] * 3  # the responder answered every call
    assert client.waiting == 0


async def test_replies_that_come_back_shuffled_reach_their_own_callers(
    serve: Any, client: RequestReplyClient, requests_topic: str
) -> None:
    count = 20
    turns: list[asyncio.Event] = []
    answered: list[float] = []

    # Requests on different keys run concurrently; each waits for its turn, and the turns go
    # backwards: the last request to arrive is answered first, the first one last.
    async def quote(request: GetQuote) -> Quote:
        turn = asyncio.Event()
        turns.append(turn)
        if len(turns) == count:
            turn.set()
        await turn.wait()
        answered.append(request.data.distance_km)
        index = turns.index(turn)
        if index > 0:
            turns[index - 1].set()  # wakes once this reply is queued
        return priced(request)

    await serve(quote)
    replies = await asyncio.gather(*[
        client.send_request(requests_topic, GetQuote(data=QuoteQuery(distance_km=d)), 30,
                            key=f"key-{d}")
        for d in range(1, count + 1)
    ])
    assert [r.data.price_cents for r in replies] == [  # type: ignore[attr-defined]
        d * 150 for d in range(1, count + 1)
    ]
    assert sorted(answered) == list(range(1, count + 1)) and answered != sorted(answered)


async def test_the_reply_topic_takes_its_replication_factor_from_config(
    kafka: Any, kafka_config: KafkaConfig, producer: KafkaProducer
) -> None:
    # One broker cannot hold two replicas: its refusal proves the factor reached the topic.
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap_servers,
                        kafka_topic_replication_factor=2)
    from_settings = RequestReplyClient(settings.kafka(), producer, EventRegistry(),
                                       instance_id=unique("caller"))
    with pytest.raises(MessagingError, match=r"(?i)replication factor"):
        await from_settings.start()

    explicit = RequestReplyClient(kafka_config, producer, EventRegistry(),
                                  instance_id=unique("caller"), replication_factor=2)
    with pytest.raises(MessagingError, match=r"(?i)replication factor"):
        await explicit.start()

    topics = await KafkaAdmin(kafka_config).topics()
    assert from_settings.reply_topic not in topics and explicit.reply_topic not in topics


async def test_the_janitor_deletes_reply_topics_of_dead_clients_only_after_the_grace(
    kafka_config: KafkaConfig, producer: KafkaProducer
) -> None:
    def new_client() -> RequestReplyClient:
        return RequestReplyClient(kafka_config, producer, EventRegistry(),
                                  instance_id=unique("caller"), orphan_grace=None)

    dead, live = new_client(), new_client()
    await dead.start()
    await dead.stop(delete_topic=False)  # as a crash leaves it: no reader, topic still there
    await live.start()
    now = itertools.count(0.0, 30.0)  # each sweep is 30 s after the one before
    janitor = ReplyTopicJanitor(kafka_config, unique("replies.janitor"), grace=60,
                                clock=lambda: next(now))
    admin = KafkaAdmin(kafka_config)
    try:
        assert dead.reply_topic not in await janitor.sweep()  # t=0: first seen without reader
        assert dead.reply_topic not in await janitor.sweep()  # t=30: within the grace
        deleted = await janitor.sweep()  # t=60
        assert dead.reply_topic in deleted and live.reply_topic not in deleted
        assert dead.reply_topic not in await admin.topics()
        for _ in range(3):
            assert live.reply_topic not in await janitor.sweep()
        assert live.reply_topic in await admin.topics()
    finally:
        await live.stop()


async def test_a_killed_clients_reply_topic_is_deleted_by_a_new_clients_janitor(
    kafka_config: KafkaConfig, producer: KafkaProducer, spawn: Any
) -> None:
    instance = unique("victim")
    victim = spawn("tests.integration.procs.reply_client", kafka_config.bootstrap_servers,
                   instance)
    assert await asyncio.to_thread(victim.stdout.readline) == "ready\n"
    victim_topic = f"replies.{instance}"
    janitor = ReplyTopicJanitor(kafka_config, unique("replies.janitor"), grace=0)

    # Alive, its reader is a group member: never an orphan, however often swept.
    for _ in range(3):
        assert victim_topic not in await janitor.sweep()

    victim.kill()
    await asyncio.to_thread(victim.wait)
    fresh = RequestReplyClient(kafka_config, producer, EventRegistry(),
                               instance_id=unique("caller"), orphan_grace=0, sweep_interval=0.5)
    await fresh.start()
    admin = KafkaAdmin(kafka_config)

    async def victim_topic_gone() -> bool:
        return victim_topic not in await admin.topics()

    try:
        # The broker drops the killed reader after its session timeout (10 s); then the
        # fresh client's janitor sees the topic reader-less on two sweeps and deletes it.
        await eventually(victim_topic_gone, timeout=40, interval=0.5)
        assert fresh.reply_topic in await admin.topics()
    finally:
        await fresh.stop()


async def test_stop_fails_waiting_callers_with_a_typed_error_and_is_idempotent(
    serve: Any, client: RequestReplyClient, requests_topic: str
) -> None:
    received = asyncio.Event()

    async def never_answers(request: GetQuote) -> Quote:
        received.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    await serve(never_answers, drain_timeout=1)  # its bus cancels the handler when stopping
    caller = asyncio.create_task(
        client.send_request(requests_topic, GetQuote(data=QuoteQuery(distance_km=1)), 30)
    )
    await asyncio.wait_for(received.wait(), NO_HANG)  # the caller now waits for its reply

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(client.stop(), client.stop()), NO_HANG)
    with pytest.raises(RequestCancelledError, match="stopped"):
        await asyncio.wait_for(caller, NO_HANG)
    assert time.monotonic() - started < 5
    await client.stop()

    with pytest.raises(RequestCancelledError, match="stopped"):
        await client.send_request(requests_topic, GetQuote(data=QuoteQuery(distance_km=1)), 5)


async def test_a_traced_request_and_its_reply_are_one_trace_the_reply_under_the_request(
    serve: Any, client: RequestReplyClient, requests_topic: str
) -> None:
    async def quote(request: GetQuote) -> Quote:
        return priced(request)

    await serve(quote, middleware=[trace_handlers])
    with recording() as spans:
        caller = tracer()
        assert caller is not None
        with caller.start_as_current_span("caller") as root:
            await client.send_request(requests_topic,
                                      GetQuote(data=QuoteQuery(distance_km=1)), timeout=20)

        # The responder's spans end once its reply is acknowledged: maybe after it arrived.
        await eventually(lambda: len(spans.get_finished_spans()) >= 4 or None, timeout=NO_HANG)
        finished = {(s.kind.name, s.name): s for s in spans.get_finished_spans()}
    request = finished[("PRODUCER", f"send {requests_topic}")]
    handled = finished[("CONSUMER", f"process {requests_topic} {GetQuote.EVENT_TYPE}")]
    reply = finished[("PRODUCER", f"send {client.reply_topic}")]
    assert request.parent is not None and request.parent.span_id == \
        root.get_span_context().span_id
    assert handled.parent is not None and handled.parent.span_id == request.context.span_id
    assert reply.parent is not None and reply.parent.span_id == handled.context.span_id
    assert {s.context.trace_id for s in finished.values()} == {root.get_span_context().trace_id}
