"""Request-reply's own logic over a stand-in producer and reply reader
(tests/unit/fake_producer.py): replies matched by request id in any order, timeouts (and
which side ran out), refusals, stop and cancellation, a reply for nobody, the responder
answering every delivery. Against a real broker: tests/integration/test_request_reply_kafka.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

import core.messaging.reply_topics as reply_topics
import core.messaging.request_reply as rr
from core.config import KafkaConfig
from core.messaging.errors import (
    MessagingError,
    PublishError,
    RemoteHandlerError,
    RequestCancelledError,
    RequestTimeoutError,
)
from core.messaging.events import IntegrationEvent
from core.messaging.handlers import handler_name
from core.messaging.request_reply import RequestFailed, RequestReplyClient, RequestResponder
from core.messaging.serialization import EventRegistry, EventSerializer
from core.messaging.types import (
    HEADER_IN_REPLY_TO,
    HEADER_REPLY_BY,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
    MessageContext,
    Record,
)
from core.runtime import Runtime
from tests.helpers import placed
from tests.unit.fake_producer import FakeProducer, FakeReplyConsumer, FakeTopicAdmin

CONFIG = KafkaConfig("fake:9092", "client", "group")
REQUESTS = "drivers.requests"


class Ask(BaseModel):
    name: str


class Told(BaseModel):
    answer: str


class GetDriver(IntegrationEvent[Ask]):
    EVENT_TYPE = "driver.get"


class DriverFound(IntegrationEvent[Told]):
    EVENT_TYPE = "driver.found"


def events() -> EventRegistry:
    registry = EventRegistry()
    registry.register(GetDriver)
    registry.register(DriverFound)
    return registry


def ask(name: str) -> GetDriver:
    return GetDriver(data=Ask(name=name))


class Wiring:
    """The producer, the admin and the reply readers the client was given."""

    def __init__(self) -> None:
        self.producer = FakeProducer([REQUESTS])
        self.admin = FakeTopicAdmin(self.producer)
        self.readers: list[FakeReplyConsumer] = []
        self.configs: list[Any] = []
        self.assign = True

    def consumer(self, config: Any, group_id: str, **kwargs: Any) -> FakeReplyConsumer:
        if not self.assign:
            kwargs["on_assign"] = lambda partitions: None
        self.configs.append(config)
        reader = FakeReplyConsumer(self.producer, group_id, **kwargs)
        self.readers.append(reader)
        return reader

    def serve(self, responder: RequestResponder, topic: str = REQUESTS) -> list[Record]:
        """Deliver each request that lands on `topic` to `responder`'s handlers, as a
        consumer would; returns the deliveries."""
        serializer = EventSerializer(responder.handlers.events)
        delivered: list[Record] = []

        async def deliver(rec: Record) -> None:
            delivered.append(rec)
            event = serializer.deserialize(rec.value, rec.headers)
            for handler in responder.handlers.handlers_for(event):
                assert not handler.once
                await handler.fn(event, MessageContext(rec, 1, "drivers"))

        self.producer.routes[topic] = deliver
        return delivered


@pytest.fixture
def wiring(monkeypatch: pytest.MonkeyPatch) -> Wiring:
    wiring = Wiring()
    monkeypatch.setattr(rr, "KafkaAdmin", wiring.admin)
    monkeypatch.setattr(rr, "KafkaConsumer", wiring.consumer)
    return wiring


@pytest.fixture
async def client(wiring: Wiring) -> AsyncIterator[RequestReplyClient]:
    c = RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="i-1",  # type: ignore[arg-type]
                           orphan_grace=None)
    await c.start(timeout=5)
    yield c
    await c.stop()


def responder_for(wiring: Wiring,
                  answer: Callable[[GetDriver], Awaitable[DriverFound]]) -> RequestResponder:
    responder = RequestResponder(wiring.producer, events())  # type: ignore[arg-type]
    responder.responds(GetDriver)(answer)
    wiring.serve(responder)
    return responder


async def found(request: GetDriver) -> DriverFound:
    return request.caused(DriverFound, Told(answer=f"driver {request.data.name}"))


async def test_a_request_gets_its_reply_on_the_clients_own_topic(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    responder_for(wiring, found)
    problems: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: problems.append(context["message"]))
    try:
        reply = await client.send_request(REQUESTS, ask("ann"), timeout=5)
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert problems == []  # the acknowledgement's callback ran clean
    assert isinstance(reply, DriverFound) and reply.data.answer == "driver ann"
    assert wiring.configs == [CONFIG]
    assert client.reply_topic == "replies.i-1" and "replies.i-1" in wiring.producer.topics
    [request] = wiring.producer.published(REQUESTS)
    assert request.header(HEADER_REPLY_TO) == "replies.i-1"
    reply_by = int(request.header(HEADER_REPLY_BY) or 0) / 1000  # when the caller stops waiting
    assert 4 < reply_by - time.time() <= 5
    [answer] = wiring.producer.published("replies.i-1")
    assert answer.header(HEADER_IN_REPLY_TO) == request.header(HEADER_REQUEST_ID)
    assert request.key is None  # an integration event names no key of its own
    reader = wiring.readers[0]
    assert reader.group_id == "replies.i-1.reader" and reader.topics == ["replies.i-1"]
    assert reader.overrides == {"enable.auto.commit": False, "auto.offset.reset": "earliest"}
    assert wiring.admin.created == [(["replies.i-1"], {  # one partition keeps nothing apart
        "partitions": 1, "replication_factor": CONFIG.topic_replication_factor,
        "configs": {"retention.ms": "3600000"}})]
    assert client.waiting == 0


async def test_replies_out_of_order_reach_their_own_calls(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    gates = {"slow": asyncio.Event(), "quick": asyncio.Event()}
    gates["quick"].set()

    async def gated(request: GetDriver) -> DriverFound:
        await gates[request.data.name].wait()
        return await found(request)

    responder_for(wiring, gated)
    slow = asyncio.create_task(client.send_request(REQUESTS, ask("slow"), timeout=5))
    for _ in range(100):  # the slow call waits first
        if wiring.producer.published(REQUESTS):
            break
        await asyncio.sleep(0.01)
    quick = await client.send_request(REQUESTS, ask("quick"), timeout=5)
    assert quick.data.answer == "driver quick"  # type: ignore[attr-defined]
    assert not slow.done() and client.waiting == 1
    gates["slow"].set()
    assert (await slow).data.answer == "driver slow"  # type: ignore[attr-defined]


async def test_the_same_request_sent_twice_is_two_calls_each_answered(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    responder_for(wiring, found)
    request = ask("ann")
    first, second = await asyncio.gather(
        client.send_request(REQUESTS, request, timeout=5),
        client.send_request(REQUESTS, request, timeout=5, key="chosen"))
    assert first.data.answer == second.data.answer == "driver ann"  # type: ignore[attr-defined]
    sent = wiring.producer.published(REQUESTS)
    assert len({r.header(HEADER_REQUEST_ID) for r in sent}) == 2
    assert sent[1].key == b"chosen"


async def test_no_reply_in_time_is_a_timeout_and_a_late_reply_is_dropped(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    release = asyncio.Event()

    async def late(request: GetDriver) -> DriverFound:
        await release.wait()
        return await found(request)

    responder_for(wiring, late)
    with pytest.raises(RequestTimeoutError, match=r"no reply to driver\.get request \w+ on "
                       r"drivers\.requests within 0\.2s"):
        await client.send_request(REQUESTS, ask("ann"), timeout=0.2)
    assert client.waiting == 0
    release.set()
    await asyncio.sleep(0.05)  # the late reply arrives and is dropped
    release.clear()

    async def prompt(request: GetDriver) -> DriverFound:
        return await found(request)

    responder_for(wiring, prompt)
    reply = await client.send_request(REQUESTS, ask("bob"), timeout=5)
    assert reply.data.answer == "driver bob"  # type: ignore[attr-defined]


async def test_a_request_the_broker_does_not_acknowledge_in_time_says_so(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    wiring.producer.hold()
    with pytest.raises(RequestTimeoutError, match=r"^broker did not acknowledge driver\.get"):
        await client.send_request(REQUESTS, ask("ann"), timeout=0.2)
    wiring.producer.release()
    wiring.producer.queue_full = asyncio.Event()  # not even queued in time
    with pytest.raises(RequestTimeoutError, match=r"^broker did not acknowledge driver\.get"):
        await client.send_request(REQUESTS, ask("bob"), timeout=0.1)
    wiring.producer.queue_full.set()
    assert client.waiting == 0


async def test_a_request_goes_under_its_own_partition_key_unless_given_one(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    order = placed("order-7")
    for key in (None, "chosen"):
        with pytest.raises(RequestTimeoutError):
            await client.send_request(REQUESTS, order, timeout=0.05, key=key)
    assert [r.key for r in wiring.producer.published(REQUESTS)] == [b"order-7", b"chosen"]


async def test_a_refused_request_fails_at_once_not_at_the_timeout(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    wiring.producer.refuse(lambda rec: True, PublishError("too large", permanent=True))
    with pytest.raises(PublishError, match="too large"):
        await asyncio.wait_for(client.send_request(REQUESTS, ask("ann"), timeout=30), 5)
    wiring.producer.refuse(lambda rec: True, PublishError("refused at once"), on_enqueue=True)
    with pytest.raises(PublishError, match="refused at once"):
        await asyncio.wait_for(client.send_request(REQUESTS, ask("ann"), timeout=30), 5)
    assert client.waiting == 0


async def test_a_failing_responder_becomes_a_remote_error(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    async def broken(request: GetDriver) -> DriverFound:
        raise LookupError("no such driver")

    responder_for(wiring, broken)
    with pytest.raises(RemoteHandlerError, match=r"^LookupError: no such driver$"):
        await client.send_request(REQUESTS, ask("ann"), timeout=5)
    [failed] = wiring.producer.published("replies.i-1")
    assert failed.header("event_type") == RequestFailed.EVENT_TYPE


async def test_stop_cancels_waiting_calls_and_a_stopped_client_refuses_work(
    wiring: Wiring,
) -> None:
    c = RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="i-2",  # type: ignore[arg-type]
                           orphan_grace=None)
    with pytest.raises(MessagingError, match=r"^RequestReplyClient is not started$"):
        await c.send_request(REQUESTS, ask("ann"), timeout=1)
    await c.stop()  # never started: nothing to do
    await c.start(timeout=5)
    await c.start(timeout=5)  # started already: no second reader
    assert len(wiring.readers) == 1
    waiting = asyncio.create_task(c.send_request(REQUESTS, ask("ann"), timeout=30))
    for _ in range(100):
        if c.waiting:
            break
        await asyncio.sleep(0.01)
    stopping = asyncio.create_task(c.stop())
    with pytest.raises(RequestCancelledError, match=r"replies\.i-2 stopped"):
        await asyncio.wait_for(waiting, 5)
    await stopping
    await c.stop()  # again: no error
    assert wiring.readers[0].closed and wiring.admin.deleted == ["replies.i-2"]
    assert wiring.admin.configs == [CONFIG, CONFIG]  # created, then deleted, on its cluster
    with pytest.raises(RequestCancelledError, match="is stopped"):
        await c.send_request(REQUESTS, ask("ann"), timeout=1)
    with pytest.raises(MessagingError,
                       match=r"^a stopped RequestReplyClient cannot start again$"):
        await c.start()


async def test_stop_may_keep_the_topic_and_survives_failing_to_delete_it(
    wiring: Wiring,
) -> None:
    kept = RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="kept",  # type: ignore[arg-type]
                              orphan_grace=None, replication_factor=3)
    await kept.start(timeout=5)
    assert wiring.admin.created[0][1]["replication_factor"] == 3
    await kept.stop(delete_topic=False)
    assert wiring.admin.deleted == [] and "replies.kept" in wiring.producer.topics
    wiring.admin.fail_delete = True
    other = RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="other",  # type: ignore[arg-type]
                               orphan_grace=None)
    await other.start(timeout=5)
    await other.stop()  # the janitors of other clients will delete it


async def test_a_cancelled_stop_still_finishes(wiring: Wiring) -> None:
    c = RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="i-3",  # type: ignore[arg-type]
                           orphan_grace=None)
    await c.start(timeout=5)
    stopping = asyncio.create_task(c.stop())
    await asyncio.sleep(0)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    await c.stop()
    assert wiring.readers[0].closed and wiring.admin.deleted == ["replies.i-3"]


async def test_a_reply_topic_never_assigned_fails_start(wiring: Wiring) -> None:
    wiring.assign = False
    c = RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="i-4",  # type: ignore[arg-type]
                           orphan_grace=None)
    with pytest.raises(MessagingError, match=r"not assigned within 0\.1s"):
        await c.start(timeout=0.1)
    assert wiring.readers[0].closed


async def test_the_reader_carries_on_after_a_poll_error(
    wiring: Wiring, client: RequestReplyClient
) -> None:
    responder_for(wiring, found)
    reader = wiring.readers[0]
    reader.fail_next = RuntimeError("poll hiccup")
    for _ in range(100):
        if reader.fail_next is None:
            break
        await asyncio.sleep(0.01)
    assert reader.fail_next is None  # raised by now
    reply = await client.send_request(REQUESTS, ask("ann"), timeout=5)
    assert reply.data.answer == "driver ann"  # type: ignore[attr-defined]


async def test_a_started_client_sweeps_reply_topics_dead_clients_left(
    wiring: Wiring, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def members(config: Any, groups: list[str]) -> dict[str, int]:
        assert config is CONFIG
        return {group: 0 if group == "replies.dead.reader" else 1 for group in groups}

    monkeypatch.setattr(reply_topics, "KafkaAdmin", wiring.admin)
    monkeypatch.setattr(reply_topics, "group_member_counts", members)
    wiring.producer.topics.update({"replies.dead", "replies.alive"})
    c = RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="me",  # type: ignore[arg-type]
                           orphan_grace=0.0, sweep_interval=0.02)
    await c.start(timeout=5)
    try:
        for _ in range(250):
            if wiring.admin.deleted:
                break
            await asyncio.sleep(0.02)
        assert wiring.admin.deleted == ["replies.dead"]  # never its own, nor a live one's
        assert all(config is CONFIG for config in wiring.admin.configs)
    finally:
        await asyncio.wait_for(c.stop(delete_topic=False), 5)


async def test_the_janitor_runs_unless_told_not_to(wiring: Wiring) -> None:
    assert RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="x",  # type: ignore[arg-type]
                              orphan_grace=None).janitor is None
    janitor = RequestReplyClient(CONFIG, wiring.producer, events(), instance_id="y",  # type: ignore[arg-type]
                                 orphan_grace=42.0).janitor
    assert janitor is not None and janitor.grace == 42.0 and janitor.own_topic == "replies.y"


async def test_the_responder_answers_every_delivery_and_only_requests_with_a_reply_topic(
    wiring: Wiring,
) -> None:
    calls = []

    async def counted(request: GetDriver) -> DriverFound:
        calls.append(request.event_id)
        return await found(request)

    shared = EventRegistry()  # the consumer's registry: it must learn the request types
    responder = RequestResponder(wiring.producer, shared)  # type: ignore[arg-type]
    assert responder.responds(GetDriver)(counted) is counted
    assert responder.handlers.events is shared
    assert shared.get("driver.get", 1) is GetDriver
    assert shared.get(RequestFailed.EVENT_TYPE, 1) is RequestFailed
    [handler] = responder.handlers.handlers_for(ask("x"))
    assert handler.name == handler_name(counted)  # logs and metrics name the responder
    wiring.producer.topics.add("replies.a")
    request = ask("ann")
    value, headers = EventSerializer(events()).serialize(request)
    asked = Record(REQUESTS, 0, 0, None, value,
                   [*headers, (HEADER_REPLY_TO, b"replies.a"), (HEADER_REQUEST_ID, b"call-1")])
    await handler.fn(request, MessageContext(asked, 1, "g"))
    await handler.fn(request, MessageContext(asked, 1, "g"))  # redelivered: answered again
    legacy = Record(REQUESTS, 0, 1, None, value, [*headers, (HEADER_REPLY_TO, b"replies.a")])
    await handler.fn(request, MessageContext(legacy, 1, "g"))
    nowhere = Record(REQUESTS, 0, 2, None, value, headers)
    await handler.fn(request, MessageContext(nowhere, 1, "g"))
    assert len(calls) == 3
    assert [r.header(HEADER_IN_REPLY_TO) for r in wiring.producer.handed] == [
        "call-1", "call-1", str(request.event_id)]
    assert all(r.topic == "replies.a" and r.key is None for r in wiring.producer.handed)


def asked_by(request: GetDriver, reply_by: float | None, offset: int = 0) -> Record:
    value, headers = EventSerializer(events()).serialize(request)
    headers = [*headers, (HEADER_REPLY_TO, b"replies.a"), (HEADER_REQUEST_ID, b"call-1")]
    if reply_by is not None:
        headers.append((HEADER_REPLY_BY, str(int(reply_by * 1000)).encode()))
    return Record(REQUESTS, 0, offset, None, value, headers)


async def test_a_request_whose_caller_stopped_waiting_is_not_answered(wiring: Wiring) -> None:
    """A new responder group reading old requests, or a backlog after an outage: nobody
    awaits those answers, and their reply topics may be gone with their callers."""
    calls = []

    async def counted(request: GetDriver) -> DriverFound:
        calls.append(request.event_id)
        return await found(request)

    responder = RequestResponder(wiring.producer, events())  # type: ignore[arg-type]
    responder.responds(GetDriver)(counted)
    [handler] = responder.handlers.handlers_for(ask("x"))
    wiring.producer.topics.add("replies.a")
    now = time.time()
    stale, fresh = ask("old"), ask("new")
    await handler.fn(stale, MessageContext(asked_by(stale, now - rr.REPLY_BY_GRACE - 1), 1, "g"))
    await handler.fn(fresh, MessageContext(asked_by(fresh, now + 5, 1), 1, "g"))
    # Within the grace (clocks differ a little between machines): still answered.
    late = ask("late")
    await handler.fn(late, MessageContext(asked_by(late, now - rr.REPLY_BY_GRACE / 2, 2), 1, "g"))
    assert calls == [fresh.event_id, late.event_id]
    assert len(wiring.producer.published("replies.a")) == 2


async def test_a_reply_that_cannot_be_delivered_in_time_is_given_up_at_the_deadline(
    wiring: Wiring,
) -> None:
    """A reply topic deleted with its caller holds the producer until its delivery timeout
    (a minute or more); the responder stops waiting when the caller does, so the lane that
    carries the request moves on (and a consumer stopping is not held up)."""
    responder = RequestResponder(wiring.producer, events())  # type: ignore[arg-type]
    responder.responds(GetDriver)(found)
    [handler] = responder.handlers.handlers_for(ask("x"))
    wiring.producer.topics.add("replies.a")
    wiring.producer.hold()  # no acknowledgement comes
    request = ask("ann")
    record = asked_by(request, time.time() + 0.1 - rr.REPLY_BY_GRACE)
    started = time.monotonic()
    await asyncio.wait_for(handler.fn(request, MessageContext(record, 1, "g")), 5)
    # At the deadline (0.1 s), not a second later: the lane waits for this. The bound leaves
    # 0.85 s for a loaded machine; a wait of a second or more always fails it.
    assert time.monotonic() - started < 0.95
    assert wiring.producer.held == 1


async def test_a_responder_declared_without_a_producer_answers_through_the_one_bound_later(
    wiring: Wiring,
) -> None:
    """A responder declared without a producer answers through one bound later. With none
    (bound or in its consumer's runtime), a request fails as a handler error (retried, then
    dead-lettered), not silently."""
    responder = RequestResponder(events=events())
    responder.responds(GetDriver)(found)
    [handler] = responder.handlers.handlers_for(ask("x"))
    wiring.producer.topics.add("replies.a")
    request = ask("ann")
    with pytest.raises(MessagingError, match="has no producer: bind"):
        await handler.fn(request, MessageContext(asked_by(request, None), 1, "g"))
    responder.bind(wiring.producer)  # type: ignore[arg-type]
    await handler.fn(request, MessageContext(asked_by(request, None), 1, "g"))
    [reply] = wiring.producer.published("replies.a")
    assert reply.header(HEADER_IN_REPLY_TO) == "call-1"


async def test_a_responder_declared_at_import_answers_through_its_consumers_runtime(
    wiring: Wiring,
) -> None:
    """`create_service` binds nothing: the producer is the one in the consumer's runtime
    (`REPLY_PRODUCER`), so one responder declared at import serves every app of a process
    through that app's own producer; a responder taking `(request, ctx)` gets the context."""
    responder = RequestResponder(events=events())
    contexts: list[MessageContext] = []

    @responder.responds(GetDriver)
    async def answer(request: GetDriver, ctx: MessageContext) -> DriverFound:
        contexts.append(ctx)
        return await found(request)

    [handler] = responder.handlers.handlers_for(ask("x"))
    wiring.producer.topics.add("replies.a")
    other = FakeProducer()
    other.topics.add("replies.a")
    request = ask("ann")
    for producer in (wiring.producer, other):
        runtime = Runtime()
        runtime.add(rr.REPLY_PRODUCER, producer)  # type: ignore[arg-type]
        ctx = MessageContext(asked_by(request, None), 1, "g", runtime=runtime)
        await handler.fn(request, ctx)
        assert contexts[-1] is ctx
    assert [r.header(HEADER_IN_REPLY_TO) for r in wiring.producer.published("replies.a")] == [
        "call-1"]
    assert [r.header(HEADER_IN_REPLY_TO) for r in other.published("replies.a")] == ["call-1"]
