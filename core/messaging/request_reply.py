"""Request-reply over Kafka.

The requester sends a request event with a `reply_to` header naming its own reply topic
(`replies.<instance id>`, one partition, created at start and deleted at stop) and awaits the
reply whose `in_reply_to` header carries the request's event id. The responder side is an
ordinary handler on an `EventConsumer`, so requests get the consumer's ordering and
idempotency; an exception in the responder becomes a `RequestFailed` reply at once (the
requester is waiting: retrying past its timeout helps no one).

    responder = RequestResponder(producer)
    @responder.responds(GetDriver)
    async def get_driver(request: GetDriver) -> DriverFound: ...
    bus.subscribe("driver.requests", responder.handlers)

    reply = await client.send_request("driver.requests", GetDriver(...), timeout=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from core.config import KafkaConfig
from core.messaging.events import BaseEvent, IntegrationEvent
from core.messaging.exceptions import (
    DeserializationError,
    RemoteHandlerError,
    RequestTimeoutError,
)
from core.messaging.handlers import HandlerRegistry, handler_name
from core.messaging.kafka_client import KafkaAdmin, KafkaConsumer, KafkaProducer
from core.messaging.serialization import EventRegistry, EventSerializer
from core.messaging.types import HEADER_IN_REPLY_TO, HEADER_REPLY_TO, MessageContext, Record

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseEvent[Any])
Responder = Callable[[Req], Awaitable[BaseEvent[Any]]]
REPLY_TOPIC_PREFIX = "replies."
REPLY_RETENTION_MS = 3_600_000


class RequestFailedData(BaseModel):
    error: str
    error_type: str


class RequestFailed(IntegrationEvent[RequestFailedData]):
    """The reply sent when the responder raised instead of answering."""

    EVENT_TYPE = "request.failed"
    EVENT_VERSION = 1


class RequestReplyClient:
    """Sends requests and awaits their replies on this instance's reply topic.

    Safe for many concurrent requests from tasks of one event loop. Replies that arrive
    after their request timed out are dropped with a debug log.
    """

    def __init__(
        self,
        config: KafkaConfig,
        producer: KafkaProducer,
        events: EventRegistry,
        *,
        instance_id: str,
        poll_timeout: float = 0.05,
    ) -> None:
        self.config = config
        self.reply_topic = f"{REPLY_TOPIC_PREFIX}{instance_id}"
        self._producer = producer
        events.register(RequestFailed)
        self._serializer = EventSerializer(events)
        self._pending: dict[str, asyncio.Future[BaseEvent[Any]]] = {}
        self._consumer: KafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._assigned = asyncio.Event()
        self._poll_timeout = poll_timeout

    async def start(self, timeout: float = 30.0) -> None:
        """Create the reply topic and return once replies can be received."""
        await KafkaAdmin(self.config).create_topics(
            [self.reply_topic], partitions=1, configs={"retention.ms": str(REPLY_RETENTION_MS)}
        )
        loop = asyncio.get_running_loop()

        def assigned(partitions: list[tuple[str, int]]) -> None:
            if partitions:
                loop.call_soon_threadsafe(self._assigned.set)

        # "earliest": the topic is this instance's own, so nothing old is waited for, and no
        # reply that lands before the first fetch can be skipped.
        overrides: dict[str, Any] = {"enable.auto.commit": False, "auto.offset.reset": "earliest"}
        self._consumer = KafkaConsumer(
            self.config, f"{self.reply_topic}.reader", on_assign=assigned, **overrides
        )
        await self._consumer.subscribe([self.reply_topic])
        self._reader = asyncio.create_task(self._read(), name=f"replies:{self.reply_topic}")
        await asyncio.wait_for(self._assigned.wait(), timeout)

    async def stop(self, *, delete_topic: bool = True) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await self._consumer.close()
        for fut in self._pending.values():
            fut.cancel()
        if delete_topic:
            await KafkaAdmin(self.config).delete_topics([self.reply_topic])

    async def send_request(
        self, topic: str, request: BaseEvent[Any], timeout: float, *, key: str | None = None
    ) -> BaseEvent[Any]:
        """Publish `request` to `topic` and return the reply event.

        Raises `RequestTimeoutError` when no reply comes within `timeout` seconds, and
        `RemoteHandlerError` when the responder failed.
        """
        if self._reader is None:
            raise RuntimeError("RequestReplyClient is not started")
        request_id = str(request.event_id)
        future: asyncio.Future[BaseEvent[Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            value, headers = self._serializer.serialize(request)
            headers.append((HEADER_REPLY_TO, self.reply_topic.encode()))
            partition_key = key if key is not None else request.partition_key()
            await self._producer.produce(topic, value, partition_key, headers)
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimeoutError(
                f"no reply to {request.EVENT_TYPE} {request_id} on {topic} within {timeout}s"
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if isinstance(reply, RequestFailed):
            raise RemoteHandlerError(f"{reply.data.error_type}: {reply.data.error}")
        return reply

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                for record in await self._consumer.poll(500, self._poll_timeout):
                    self._resolve(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reply reader error on %s", self.reply_topic)
                await asyncio.sleep(0.5)

    def _resolve(self, record: Record) -> None:
        request_id = record.header(HEADER_IN_REPLY_TO)
        future = self._pending.get(request_id or "")
        if future is None or future.done():
            log.debug("dropping reply to %s: no request waits for it", request_id)
            return
        try:
            future.set_result(self._serializer.deserialize(record.value, record.headers))
        except DeserializationError as exc:
            future.set_exception(RemoteHandlerError(f"unreadable reply: {exc}"))


class RequestResponder:
    """Turns `async def (request) -> reply` functions into consumer handlers that answer."""

    def __init__(self, producer: KafkaProducer, events: EventRegistry | None = None) -> None:
        self._producer = producer
        self.handlers = HandlerRegistry(events)
        self.handlers.events.register(RequestFailed)
        self._serializer = EventSerializer(self.handlers.events)

    def responds(self, request_cls: type[Req]) -> Callable[[Responder[Req]], Responder[Req]]:
        def decorator(fn: Responder[Req]) -> Responder[Req]:
            async def answer(request: Req, ctx: MessageContext) -> None:
                await self._answer(fn, request, ctx)

            self.handlers.add(request_cls, answer, name=handler_name(fn))
            return fn

        return decorator

    async def _answer(self, fn: Responder[Any], request: BaseEvent[Any],
                      ctx: MessageContext) -> None:
        reply_to = ctx.record.header(HEADER_REPLY_TO)
        if not reply_to:
            log.warning("%s %s has no reply_to header; not answering", request.EVENT_TYPE,
                        request.event_id)
            return
        try:
            reply = await fn(request)
        except Exception as exc:
            log.info("responder for %s failed: %r", request.EVENT_TYPE, exc)
            reply = request.caused(
                RequestFailed,
                RequestFailedData(error=str(exc), error_type=type(exc).__name__),
            )
        value, headers = self._serializer.serialize(reply)
        headers.append((HEADER_IN_REPLY_TO, str(request.event_id).encode()))
        await self._producer.produce(reply_to, value, None, headers)
