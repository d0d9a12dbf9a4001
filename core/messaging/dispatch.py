"""What happens to one record: decode, run its handlers once each, retry, or dead-letter.

This is the one place where the ack/retry/dead-letter policy is decided; the Kafka consumer
and the in-memory bus both hand every record to a `RecordDispatcher`.

- A well-formed record of an event type this consumer has no handler for (another team's
  event on a shared topic) is `NO_HANDLER`: acknowledged and counted, not dead-lettered.
- A record that cannot be decoded, whatever the reason (bad bytes, a null header, a bug in
  an upcaster), is poison: it goes to the DLQ at once with the error.
- Each handler runs through the idempotency store, so one that already succeeded for this
  event (before a crash, or on an earlier attempt) is skipped; a handler registered with
  `once=False` (a request-reply responder) bypasses the store and runs on every delivery.
- Failing handlers are retried with the policy's backoff; only the failing ones run again.
  `PermanentHandlerError`, or the policy's `should_retry` saying no, ends the retries early.
- A store that cannot be reached (`StoreUnavailableError`: the database down, no free
  connection) is not the handler's failure: the record waits and is tried again without
  spending an attempt, for as long as it takes; it is never dead-lettered for that.
- Out of attempts, the record goes to the DLQ with the error. If even the DLQ cannot take it,
  that is retried without end and logged loudly: the record is never dropped, and the
  caller does not acknowledge it until `process` returns.
- Every attempt runs with the event's ids bound in `core.correlation`: its correlation id
  (its own id when it has none, as `BaseEvent.caused` does) and its id as the causation id,
  so what the handlers write to the outbox, the services they call and the lines they log
  carry them; and the event with its record in `core.logs`, so log lines name it. Unbound
  after the attempt.
- Middleware (the consumer's, then the registry's; see `handlers.py`) wraps each handler
  inside `run_once`: it sees only runs that happen, within the inbox transaction, and its
  failures are the handler's, under the policy above. Retries, the inbox and the dead letters
  stay outside it, decided here.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Protocol

from core import correlation
from core.messaging.dlq import DeadLetterSink, dead_letter_headers
from core.messaging.errors import (
    PermanentHandlerError,
    StoreUnavailableError,
    UnknownEventTypeError,
)
from core.messaging.events import BaseEvent
from core.messaging.handlers import HandlerMiddleware, HandlerRegistry, NamedHandler
from core.messaging.idempotency import IdempotencyStore, InMemoryIdempotencyStore, Work
from core.messaging.serialization import EventSerializer, envelope_headers
from core.messaging.types import EventHandler, MessageContext, Record
from core.resilience.retry import RetryPolicy
from core.runtime import Runtime

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    HANDLED = "handled"
    NO_HANDLER = "no_handler"
    DEAD_LETTERED = "dead_lettered"

    # Members are singletons, so identity hashing is exact; Enum's own __hash__ is a Python
    # function, paid on every record the consumer counts in `processed`.
    __hash__ = object.__hash__


def _retryable(exc: BaseException) -> bool:
    return not isinstance(exc, PermanentHandlerError)


DEFAULT_RETRY = RetryPolicy(max_attempts=5, initial_delay=0.2, max_delay=10.0,
                            should_retry=_retryable)
DLQ_RETRY_DELAY = 1.0
STORE_RETRY = RetryPolicy(max_attempts=1_000_000, initial_delay=0.1, max_delay=5.0)
"""Waits between tries while the idempotency store is unavailable (the count is not a limit
that matters: the record is never given up for it)."""


class DispatchObserver(Protocol):
    """Told what the policy decided, for metrics; called on the dispatching task, so it must
    not block. `event_type` is the decoded type, or the raw header (None when missing)."""

    def retried(self, record: Record, event_type: str) -> None: ...

    def dead_lettered(self, record: Record, event_type: str | bytes | None) -> None: ...

    def skipped(self, record: Record, event_type: str | bytes | None, reason: str) -> None: ...

    def claimed(self, record: Record, event_type: str, group: str, ran: bool) -> None:
        """An inbox claim: `ran` False when the handler had already run (a duplicate)."""


class RecordDispatcher:
    """Processes records for one set of handlers. Safe for concurrent use by many tasks."""

    observer: ClassVar[DispatchObserver | None] = None
    """Process-wide, like logging: set once by `core.metrics` when a service starts."""

    def __init__(
        self,
        handlers: HandlerRegistry,
        idempotency: IdempotencyStore,
        dead_letters: DeadLetterSink,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        consumer_group: str = "",
        runtime: Runtime | None = None,
        middleware: Sequence[HandlerMiddleware] = (),
    ) -> None:
        self.handlers = handlers
        self.runtime = runtime if runtime is not None else Runtime()
        """Handed to handlers as `ctx.runtime`."""
        self.middleware = (*middleware, *handlers.middleware)
        """Outermost first: the consumer's, then the registry's."""
        self._wrapped: dict[NamedHandler, EventHandler] = {}
        self.serializer = EventSerializer(handlers.events)
        self.idempotency = idempotency
        # The in-memory store's steps, called inline for a plain handler (no coroutine or
        # closure per record), unless a subclass changed what `run_once` does.
        self._inline: InMemoryIdempotencyStore | None = None
        if (isinstance(idempotency, InMemoryIdempotencyStore)
                and type(idempotency).run_once is InMemoryIdempotencyStore.run_once):
            self._inline = idempotency
        self.dead_letters = dead_letters
        self.retry = retry
        self.group = consumer_group

    async def process(self, record: Record) -> Outcome:
        headers = record.headers  # read once: a consumed record reads them on first use
        event_type, decoded_type, version, id_header = envelope_headers(headers)
        if event_type is not None and not self.handlers.may_handle(event_type):
            return self._not_ours(record, event_type)
        try:
            event = self.serializer.deserialize_as(record.value, headers, decoded_type, version)
        except UnknownEventTypeError:
            return self._not_ours(record, event_type)
        except Exception as exc:  # any failure to decode is poison, never a crash
            log.warning("poison record %s/%d@%d: %s", record.topic, record.partition,
                        record.offset, exc)
            await self._dead_letter(record, exc, 1, [], event_type)
            return Outcome.DEAD_LETTERED
        pending = self.handlers.handlers_for(event)
        if not pending:
            return self._not_ours(record, event_type)
        # `_idempotency_id`, its common case inline (a call less per record)
        if id_header is not None and len(id_header) == UUID_TEXT_LENGTH and id_header.isascii():
            event_id = id_header.decode("ascii")
        else:
            event_id = _idempotency_id(id_header, event)
        attempt, outages = 1, 0
        while True:
            failures = await self._run(event, event_id, record, pending, attempt)
            if not failures:
                return Outcome.HANDLED
            unavailable = [f for f in failures if isinstance(f[1], StoreUnavailableError)]
            if unavailable:  # not the handlers' fault: wait, and spend no attempt
                outages += 1
                delay = STORE_RETRY.delay(min(outages, 20))
                log.warning("idempotency store unavailable for %s %s; retrying in %.2fs: %s",
                            event.EVENT_TYPE, event.event_id, delay, unavailable[0][1])
                await asyncio.sleep(delay)
                pending = [h for h, _ in failures]
                continue
            outages = 0
            error = failures[0][1]
            if not self.retry.retries(error, attempt):
                log.error("giving up on %s %s after %d attempts: %r", event.EVENT_TYPE,
                          event.event_id, attempt, error)
                await self._dead_letter(record, error, attempt, [h.name for h, _ in failures],
                                        event.EVENT_TYPE)
                return Outcome.DEAD_LETTERED
            delay = self.retry.delay(attempt)
            log.info("retrying %s %s in %.2fs (attempt %d failed: %r)", event.EVENT_TYPE,
                     event.event_id, delay, attempt, error)
            if (observer := self.observer) is not None:
                observer.retried(record, event.EVENT_TYPE)
            await asyncio.sleep(delay)
            pending = [h for h, _ in failures]
            attempt += 1

    def _not_ours(self, record: Record, event_type: bytes | None) -> Outcome:
        log.debug("no handler for %r at %s/%d@%d", event_type, record.topic, record.partition,
                  record.offset)
        if (observer := self.observer) is not None:
            observer.skipped(record, event_type, "no_handler")
        return Outcome.NO_HANDLER

    async def _run(
        self,
        event: BaseEvent[Any],
        event_id: str,
        record: Record,
        handlers: list[NamedHandler],
        attempt: int,
    ) -> list[tuple[NamedHandler, Exception]]:
        ctx: MessageContext | None = None  # built only for a handler that takes it
        failures = []
        middleware, observer = self.middleware, self.observer
        # the event's ids for `core.correlation`, and the event for `core.logs`, in one set
        bound = correlation.bind_handling(event.correlation_id or event_id, event, event_id,
                                          record)
        try:
            for handler in handlers:
                try:
                    plain = handler.plain
                    if plain is not None and not middleware:
                        if handler.once:
                            inline, key = self._inline, (event_id, handler.name)
                            ran = inline.claim(key) if inline is not None else None
                            if ran and inline is not None:  # claimed: run it and settle
                                done = False
                                try:
                                    await plain(event)
                                    done = True
                                finally:
                                    inline.settle(key, done)
                            elif ran is None:
                                ran = await self.idempotency.run_once(
                                    event_id, handler.name, _bind_plain(plain, event))
                            if observer is not None:
                                observer.claimed(record, event.EVENT_TYPE, self.group, ran)
                        else:
                            await plain(event)
                        continue
                    fn = self._wrap(handler) if middleware else handler.fn
                    if ctx is None:
                        ctx = MessageContext(record=record, attempt=attempt,
                                             consumer_group=self.group, runtime=self.runtime)
                    if handler.once:
                        ran = await self.idempotency.run_once(event_id, handler.name,
                                                              _bind(fn, event, ctx))
                        if observer is not None:
                            observer.claimed(record, event.EVENT_TYPE, self.group, ran)
                    else:
                        await fn(event, ctx)
                except Exception as exc:
                    failures.append((handler, exc))
        finally:
            correlation.unbind(bound)
        return failures

    def _wrap(self, handler: NamedHandler) -> EventHandler:
        """`handler.fn` inside the middleware, composed once per handler."""
        fn = self._wrapped.get(handler)
        if fn is None:
            fn = handler.fn
            for middleware in reversed(self.middleware):
                fn = middleware(fn, handler.name)
            self._wrapped[handler] = fn
        return fn

    async def _dead_letter(
        self, record: Record, error: BaseException, attempts: int, handlers: list[str],
        event_type: str | bytes | None,
    ) -> None:
        headers = dead_letter_headers(record, error, attempts, handlers, self.group)
        while True:
            try:
                await self.dead_letters.send(record, headers)
                if (observer := self.observer) is not None:
                    observer.dead_lettered(record, event_type)
                return
            except Exception:
                log.exception("cannot dead-letter %s/%d@%d; keeping it and trying again",
                              record.topic, record.partition, record.offset)
                await asyncio.sleep(DLQ_RETRY_DELAY)


UUID_TEXT_LENGTH = 36


def _idempotency_id(header: bytes | None, event: BaseEvent[Any]) -> str:
    """The event id the idempotency store keys on: the `event_id` header, which
    `EventSerializer.serialize` writes as `str(event.event_id)` (so reading it back saves
    that conversion, a microsecond per record), or the body's id when the header is missing
    or is not a UUID's text (a record from another producer)."""
    if header is not None and len(header) == UUID_TEXT_LENGTH:
        try:
            return header.decode("ascii")
        except UnicodeDecodeError:
            pass
    return str(event.event_id)


def _bind_plain(fn: Callable[[BaseEvent[Any]], Awaitable[None]], event: BaseEvent[Any]) -> Work:
    def work(session: Any) -> Awaitable[None]:
        return fn(event)  # it takes no context, so no session either

    return work


def _bind(fn: EventHandler, event: BaseEvent[Any], ctx: MessageContext) -> Work:
    def work(session: Any) -> Awaitable[None]:
        return fn(event, ctx if session is None else replace(ctx, session=session))

    return work
