"""Request-reply over Kafka.

The requester sends a request event with two headers: `reply_to`, naming its own reply topic
(`replies.<instance id>`, one partition, created at start and deleted at stop), and
`request_id`, new for every call. It awaits the reply whose `in_reply_to` header carries that
id. The id belongs to the call, not to the event: the same request object sent twice (a
caller's retry, two concurrent calls) makes two calls, and each gets its own answer.

The responder side is an ordinary handler on an `EventConsumer`, so requests get the
consumer's ordering per key and its concurrency across keys, but not its once-only
idempotency: every delivered request is a call someone awaits, so it is answered every time
(a redelivered request is answered again; the requester drops the extra reply). A responder
with side effects must make them idempotent itself. An exception in the responder becomes a
`RequestFailed` reply at once (the requester is waiting: retrying past its timeout helps no
one).

Reply topics of clients that crashed are deleted by the janitor every client runs
(`reply_topics.py`).

    responder = RequestResponder()
    @responder.responds(GetDriver)
    async def get_driver(request: GetDriver, ctx: MessageContext) -> DriverFound: ...
    bus.subscribe("driver.requests", responder.handlers)  # or Subscription(topic, responder)

A responder declared at import answers through the producer its consumer's runtime holds
under `REPLY_PRODUCER` (`create_service` puts the bus's there), or one given to it (`bind`).

    reply = await client.send_request("driver.requests", GetDriver(...), timeout=5)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from core.config import KafkaConfig
from core.messaging.errors import (
    DeserializationError,
    MessagingError,
    RemoteHandlerError,
    RequestCancelledError,
    RequestTimeoutError,
)
from core.messaging.events import BaseEvent, IntegrationEvent
from core.messaging.handlers import HandlerRegistry, handler_name, reply_classes
from core.messaging.kafka_client import DeliveryReport, KafkaAdmin, KafkaConsumer, KafkaProducer
from core.messaging.reply_topics import (
    DEFAULT_GRACE,
    DEFAULT_SWEEP_INTERVAL,
    REPLY_TOPIC_PREFIX,
    ReplyTopicJanitor,
    reader_group,
    reply_topic,
)
from core.messaging.serialization import EventRegistry, EventSerializer
from core.messaging.types import (
    HEADER_IN_REPLY_TO,
    HEADER_REPLY_BY,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
    MessageContext,
    Record,
)
from core.runtime import RuntimeKey
from core.tasks import cancel_and_wait

log = logging.getLogger(__name__)

__all__ = ["REPLY_PRODUCER", "REPLY_TOPIC_PREFIX", "PendingReplies", "RequestFailed",
           "RequestReplyClient", "RequestResponder"]

Req = TypeVar("Req", bound=BaseEvent[Any])
Responder = Callable[[Req], Awaitable[BaseEvent[Any]]]
ResponderFn = TypeVar("ResponderFn", bound=Callable[..., Awaitable[BaseEvent[Any]]])
"""A responder: `async def (request) -> reply` or `async def (request, ctx) -> reply`."""
REPLY_PRODUCER: RuntimeKey[KafkaProducer] = RuntimeKey("reply_producer")
"""The producer a responder answers through, from its consumer's runtime (`ctx.runtime`).
Not checked by class when added, so a test can hand in a double."""
Reply = asyncio.Future[BaseEvent[Any]]
REPLY_RETENTION_MS = 3_600_000


class RequestFailedData(BaseModel):
    error: str
    error_type: str


class RequestFailed(IntegrationEvent[RequestFailedData]):
    """The reply sent when the responder raised instead of answering."""

    EVENT_TYPE = "request.failed"
    EVENT_VERSION = 1


class PendingReplies:
    """The calls waiting for a reply, each under its own request id. One event loop.

    A reply resolves only the call its `in_reply_to` names: replies come back in any order,
    since the responder runs requests with different keys concurrently.
    """

    def __init__(self, serializer: EventSerializer) -> None:
        self._serializer = serializer
        self._futures: dict[str, Reply] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def expect(self) -> tuple[str, Reply]:
        """A new request id and the future its reply will resolve."""
        request_id = uuid.uuid4().hex
        future: Reply = asyncio.get_running_loop().create_future()
        self._futures[request_id] = future
        return request_id, future

    def forget(self, request_id: str) -> None:
        """The call ended (answered, timed out, cancelled); a late reply is dropped."""
        self._futures.pop(request_id, None)

    def resolve(self, record: Record) -> bool:
        """Hand `record` to the call it answers; False when no call waits for it."""
        request_id = record.header(HEADER_IN_REPLY_TO)
        future = self._futures.get(request_id or "")
        if future is None or future.done():
            log.debug("dropping reply to %s: no request waits for it", request_id)
            return False
        try:
            future.set_result(self._serializer.deserialize(record.value, record.headers))
        except DeserializationError as exc:
            future.set_exception(RemoteHandlerError(f"unreadable reply: {exc}"))
        return True

    def cancel_all(self, reason: str) -> None:
        """Fail every waiting call with `RequestCancelledError(reason)`."""
        for future in self._futures.values():
            if not future.done():
                future.set_exception(RequestCancelledError(reason))


class RequestReplyClient:
    """Sends requests and awaits their replies on this instance's reply topic.

    Safe for many concurrent requests from tasks of one event loop. A reply that arrives
    after its call ended (timed out, cancelled) is dropped with a debug log. `stop()` fails
    the calls still waiting with `RequestCancelledError`; a stopped client cannot restart.
    """

    def __init__(
        self,
        config: KafkaConfig,
        producer: KafkaProducer,
        events: EventRegistry,
        *,
        instance_id: str,
        poll_timeout: float = 0.05,
        replication_factor: int | None = None,
        orphan_grace: float | None = DEFAULT_GRACE,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
    ) -> None:
        """`replication_factor` of the reply topic: the config's unless given.
        `orphan_grace`: how long another client's reply topic must go without a reader before
        this client's janitor deletes it, sweeping every `sweep_interval` seconds (see
        `reply_topics`); None runs no janitor."""
        self.config = config
        self.reply_topic = reply_topic(instance_id)
        self.replication_factor = (
            replication_factor if replication_factor is not None
            else config.topic_replication_factor
        )
        self.janitor = (
            ReplyTopicJanitor(config, self.reply_topic, grace=orphan_grace)
            if orphan_grace is not None else None
        )
        self._sweep_interval = sweep_interval
        self._producer = producer
        events.register(RequestFailed)
        self._serializer = EventSerializer(events)
        self._pending = PendingReplies(self._serializer)
        self._consumer: KafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._assigned = asyncio.Event()
        self._poll_timeout = poll_timeout
        self._started = False
        self._stopping: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """How many calls wait for their reply now."""
        return len(self._pending)

    async def start(self, timeout: float = 30.0) -> None:
        """Create the reply topic and return once replies can be received."""
        if self._stopping is not None:
            raise MessagingError("a stopped RequestReplyClient cannot start again")
        if self._started:
            return
        await KafkaAdmin(self.config).create_topics(
            [self.reply_topic], partitions=1, replication_factor=self.replication_factor,
            configs={"retention.ms": str(REPLY_RETENTION_MS)},
        )
        loop = asyncio.get_running_loop()

        def assigned(partitions: list[tuple[str, int]]) -> None:
            if partitions:
                loop.call_soon_threadsafe(self._assigned.set)

        # "earliest": the topic is this instance's own, so nothing old is waited for, and no
        # reply that lands before the first fetch can be skipped.
        overrides: dict[str, Any] = {"enable.auto.commit": False, "auto.offset.reset": "earliest"}
        self._consumer = KafkaConsumer(
            self.config, reader_group(self.reply_topic), on_assign=assigned, **overrides
        )
        self._started = True
        await self._consumer.subscribe([self.reply_topic])
        self._tasks.append(
            asyncio.create_task(self._read(), name=f"replies:{self.reply_topic}")
        )
        try:
            await asyncio.wait_for(self._assigned.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise MessagingError(
                f"reply topic {self.reply_topic} was not assigned within {timeout}s"
            ) from None
        if self.janitor is not None:
            self._tasks.append(asyncio.create_task(
                self.janitor.run(self._sweep_interval), name=f"janitor:{self.reply_topic}"
            ))

    async def stop(self, *, delete_topic: bool = True) -> None:
        """Fail the calls still waiting with `RequestCancelledError`, stop reading, and
        delete the reply topic unless `delete_topic` is false. Idempotent; concurrent calls
        share one stop, which a cancelled caller does not cut short."""
        if not self._started:
            return
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._shut_down(delete_topic),
                                                 name=f"stop:{self.reply_topic}")
        await asyncio.shield(self._stopping)

    async def _shut_down(self, delete_topic: bool) -> None:
        self._pending.cancel_all(f"request-reply client {self.reply_topic} stopped")
        await cancel_and_wait(*self._tasks)
        if self._consumer is not None:
            await self._consumer.close()
        if delete_topic:
            try:
                await KafkaAdmin(self.config).delete_topics([self.reply_topic])
            except Exception as exc:  # the other clients' janitors will delete it
                log.warning("could not delete reply topic %s: %s", self.reply_topic, exc)

    async def send_request(
        self, topic: str, request: BaseEvent[Any], timeout: float, *, key: str | None = None
    ) -> BaseEvent[Any]:
        """Publish `request` to `topic` and return the reply event.

        `timeout` bounds the whole call: getting the request acknowledged (a missing topic or
        an unreachable broker holds it there) and then the reply. Raises
        `RequestTimeoutError` when it runs out, `RemoteHandlerError` when the responder
        failed, `PublishError` when the broker refused the request, and
        `RequestCancelledError` when the client stops first.
        """
        if self._stopping is not None:
            raise RequestCancelledError(f"request-reply client {self.reply_topic} is stopped")
        if not self._started:
            raise MessagingError("RequestReplyClient is not started")
        request_id, future = self._pending.expect()
        ack: asyncio.Future[DeliveryReport] | None = None
        try:
            async with asyncio.timeout(timeout):
                value, headers = self._serializer.serialize(request)
                headers.append((HEADER_REPLY_TO, self.reply_topic.encode()))
                headers.append((HEADER_REQUEST_ID, request_id.encode()))
                reply_by = int((time.time() + timeout) * 1000)
                headers.append((HEADER_REPLY_BY, str(reply_by).encode()))
                partition_key = key if key is not None else request.partition_key()
                ack = await self._producer.enqueue(topic, value, partition_key, headers)
                ack.add_done_callback(functools.partial(_fail_on_refusal, future))
                reply = await future
        except TimeoutError:
            what = "no reply to" if _acknowledged(ack) else "broker did not acknowledge"
            raise RequestTimeoutError(
                f"{what} {request.EVENT_TYPE} request {request_id} on {topic} within {timeout}s"
            ) from None
        finally:
            self._pending.forget(request_id)
        if isinstance(reply, RequestFailed):
            raise RemoteHandlerError(f"{reply.data.error_type}: {reply.data.error}")
        return reply

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                for record in await self._consumer.poll(500, self._poll_timeout):
                    self._pending.resolve(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reply reader error on %s", self.reply_topic)
                await asyncio.sleep(0.5)


def _fail_on_refusal(reply: Reply, ack: asyncio.Future[DeliveryReport]) -> None:
    """A request the broker refused will get no reply: fail its call now, not at the timeout.
    Runs even after the call ended, so the refusal is always retrieved (asyncio would log it
    as never retrieved otherwise)."""
    if ack.cancelled():
        return
    error = ack.exception()
    if error is not None and not reply.done():
        reply.set_exception(error)


def _acknowledged(ack: asyncio.Future[DeliveryReport] | None) -> bool:
    return ack is not None and ack.done() and not ack.cancelled() and ack.exception() is None


class RequestResponder:
    """Turns `async def (request[, ctx]) -> reply` functions into consumer handlers that
    answer.

    Declared at import, it holds no producer: each answer goes through the one in the
    consumer's runtime (`REPLY_PRODUCER`; `create_service` puts the bus's there, so one
    responder serves every app built in a process), or through one given to it (`bind`)."""

    def __init__(self, producer: KafkaProducer | None = None,
                 events: EventRegistry | None = None) -> None:
        self._producer = producer
        self.handlers = HandlerRegistry(events)
        self.handlers.events.register(RequestFailed)
        self._serializer = EventSerializer(self.handlers.events)

    def bind(self, producer: KafkaProducer) -> None:
        """Answer through `producer` from now on."""
        self._producer = producer

    def responds(self, request_cls: type[Req]) -> Callable[[ResponderFn], ResponderFn]:
        def decorator(fn: ResponderFn) -> ResponderFn:
            call = _with_context(fn)

            async def answer(request: Req, ctx: MessageContext) -> None:
                await self._answer(call, request, ctx)

            # once=False: each delivery is a call awaiting its answer (see the module doc).
            self.handlers.add(request_cls, answer, name=handler_name(fn), once=False)
            # What the AsyncAPI document says it answers (`RequestFailed` is always possible).
            self.handlers.replies[request_cls] = reply_classes(fn)
            return fn

        return decorator

    async def _answer(self, fn: Callable[[BaseEvent[Any], MessageContext],
                                         Awaitable[BaseEvent[Any]]],
                      request: BaseEvent[Any], ctx: MessageContext) -> None:
        reply_to = ctx.record.header(HEADER_REPLY_TO)
        if not reply_to:
            log.warning("%s %s has no reply_to header; not answering", request.EVENT_TYPE,
                        request.event_id)
            return
        left = _time_left(ctx.record.header(HEADER_REPLY_BY))
        if left is not None and left <= 0:
            log.debug("%s %s: its caller stopped waiting %.1fs ago; not answering",
                      request.EVENT_TYPE, request.event_id, -left)
            return
        try:
            reply = await fn(request, ctx)
        except Exception as exc:
            log.info("responder for %s failed: %r", request.EVENT_TYPE, exc)
            reply = request.caused(
                RequestFailed,
                RequestFailedData(error=str(exc), error_type=type(exc).__name__),
            )
        producer = self._producer or ctx.runtime.get(REPLY_PRODUCER)
        if producer is None:  # a handler error: the consumer retries, then dead-letters
            raise MessagingError(f"responder for {request.EVENT_TYPE} has no producer: bind() "
                                 "it, or put one in its consumer's runtime (REPLY_PRODUCER)")
        value, headers = self._serializer.serialize(reply)
        # Requesters that predate per-call ids are answered under the request's event id.
        in_reply_to = ctx.record.header(HEADER_REQUEST_ID) or str(request.event_id)
        headers.append((HEADER_IN_REPLY_TO, in_reply_to.encode()))
        left = _time_left(ctx.record.header(HEADER_REPLY_BY))
        try:
            async with asyncio.timeout(None if left is None else max(left, 0.0)):
                await producer.produce(reply_to, value, None, headers)
        except TimeoutError:
            log.info("reply to %s %s not delivered to %s before its caller stopped waiting",
                     request.EVENT_TYPE, request.event_id, reply_to)


def _with_context(fn: Callable[..., Awaitable[BaseEvent[Any]]]
                  ) -> Callable[[BaseEvent[Any], MessageContext], Awaitable[BaseEvent[Any]]]:
    """`fn` as a (request, ctx) function, whether it takes the context or not (decided once,
    at declaration)."""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) >= 2:
        return fn

    async def without_context(request: BaseEvent[Any], ctx: MessageContext) -> BaseEvent[Any]:
        return await fn(request)

    return without_context


REPLY_BY_GRACE = 1.0
"""Seconds a responder still answers after `reply_by`: allowance for clocks that differ a
little between the requester's machine and the responder's."""


def _time_left(reply_by: str | None) -> float | None:
    """Seconds until the caller stops waiting (plus the grace); None when the request does
    not say (requesters that predate `reply_by`, or a header that is not a number)."""
    if not reply_by:
        return None
    try:
        deadline = int(reply_by) / 1000
    except ValueError:
        return None
    return deadline + REPLY_BY_GRACE - time.time()
