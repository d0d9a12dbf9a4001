"""`ServiceClient`: call another service by name, over whichever of its instances is healthy.

One call, in order: resolve the name through the `ServiceRegistry`; skip instances whose
breaker is open (all open: fail fast, `UpstreamUnavailableError` with `Retry-After`); pick the
one with the fewest calls in flight; take a slot of the service's bulkhead; send under the attempt
timeout, with the caller's identity and the request and correlation ids. Connection failures,
timeouts and 502/503/504 are retried, on another instance when there is one, with backoff and
jitter (longer if the upstream sent `Retry-After`), but only for requests that are safe to
repeat (or that were never sent: a connection that could not be opened carried nothing, so a
POST or a streamed body goes to another instance as well), only while the whole call's
deadline allows (the wait for a bulkhead slot included), and only while the service's retry
budget lasts. Whatever still fails is an `UpstreamUnavailableError` (503),
`UpstreamTimeoutError` (504) or `UpstreamBadResponseError` (502), all `UpstreamError`; 4xx
answers are returned as responses unless `raise_for_status`.

Task safety: one client per process (per event loop), shared by all requests; it holds the
connection pool, so build it at start-up and `aclose()` it at shutdown.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from core import correlation
from core.http import context
from core.http.aiohttp_transport import AiohttpTransport
from core.http.auth import Auth, NoAuth
from core.http.balancer import LeastOutstanding
from core.http.errors import (
    UpstreamBadResponseError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from core.http.response import Response
from core.http.retries import (
    IDEMPOTENT_METHODS,
    RETRY_STATUSES,
    RetryBudget,
    may_retry,
    parse_retry_after,
    retry_delay,
)
from core.http.transport import ConnectFailedError, ExchangeFailedError, RawResponse, Transport
from core.resilience.breaker import BreakerConfig, CircuitBreaker, Clock, StateListener
from core.resilience.bulkhead import Bulkhead
from core.resilience.errors import BulkheadFullError, CallTimeoutError, CircuitOpenError
from core.resilience.registry import KeyedRegistry
from core.resilience.retry import RetryPolicy
from core.resilience.timeout import timeout as call_timeout
from core.service_registry.base import Instance, RegistryError, ServiceRegistry
from core.tracing import trace_headers

_UNSET: Any = object()

Body = bytes | AsyncIterable[bytes] | None
"""A request body: bytes, or chunks streamed as they come (retried only when no connection
could be opened, so none was taken: chunks cannot be sent twice)."""
Headers = Mapping[str, str] | Sequence[tuple[str, str]]
"""A mapping, or pairs when a name repeats (a proxy passing a client's headers on)."""


def _default_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=1.0)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Limits of a `ServiceClient`; every service called gets its own bulkhead and budget,
    every instance its own breaker, all with these settings."""

    timeout: float = 5.0
    """Seconds one attempt may take, up to the end of the body (streams: up to the headers)."""
    deadline: float = 15.0
    """Seconds the whole call may take, retries and their waits included."""
    retry: RetryPolicy = field(default_factory=_default_retry)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    max_in_flight: int = 100
    """Calls in flight to one service at once (the bulkhead)."""
    max_waiting: int = 100
    max_wait: float = 1.0
    """Calls that may wait for a slot, and for how long, before `UpstreamUnavailableError`."""
    retry_ratio: float = 0.2
    min_retries: int = 10
    """Retry budget per service: `min_retries + retry_ratio * calls` over the last 10 s."""
    max_upstreams: int = 1024
    """Breakers, bulkheads and budgets kept (least recently used idle ones are forgotten)."""
    pool_size: int = 256
    """Connections kept open, all services together."""

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.deadline <= 0:
            raise ValueError("timeout and deadline must be > 0")


@dataclass(slots=True)
class _Call:
    method: str
    service: str
    target: str
    headers: tuple[tuple[str, str], ...]
    content: Body
    retryable: bool
    timeout: float
    deadline: float
    retry: RetryPolicy
    read_up_to: int = 0
    """Streams only: a body declared this small is read inside the attempt."""


class _RetryableError(Exception):
    """An attempt failed in a way another attempt might fix; `error` is what to raise if none
    is made. `sent` is False when the request certainly never left (no connection was
    opened, or the breaker refused it): then any request may be sent again."""

    def __init__(self, error: UpstreamError, retry_after: float | None = None, *,
                 sent: bool = True) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.sent = sent


_Key = tuple[str, str, str]
"""An instance as the client tells them apart: service, instance id, url."""


def _key(instance: Instance) -> _Key:
    return (instance.service, instance.instance_id, instance.url)


class ServiceClient:
    """Calls services by name. `auth` is the default identity of every call (see
    `core.http.auth`); each call may pass another."""

    def __init__(self, registry: ServiceRegistry, *, auth: Auth | None = None,
                 config: ClientConfig | None = None, transport: Transport | None = None,
                 clock: Clock = time.monotonic,
                 on_breaker_change: StateListener | None = None,
                 instance_filter: Callable[[Instance], bool] | None = None) -> None:
        """`instance_filter` leaves out instances known to be unwell from other sources
        than this client's own calls (the gateway's active health checks)."""
        self.config = config = config or ClientConfig()
        self._instance_filter = instance_filter
        self._policies: dict[int, RetryPolicy] = {}
        """The retry policy with another `max_attempts`, made once per count asked for."""
        self._registry = registry
        self._auth = auth or NoAuth()
        self._transport = transport or AiohttpTransport(config.pool_size)
        self._clock = clock
        self._balancer = LeastOutstanding()

        def breaker(key: _Key) -> CircuitBreaker:
            return CircuitBreaker(f"{key[0]}@{key[2]}", config.breaker, clock=clock,
                                  on_state_change=on_breaker_change)

        self._breakers: KeyedRegistry[_Key, CircuitBreaker] = KeyedRegistry(
            breaker, max_size=config.max_upstreams, idle=lambda b: b.idle)
        self._bulkheads: KeyedRegistry[str, Bulkhead] = KeyedRegistry(
            lambda service: Bulkhead(service, config.max_in_flight,
                                     max_waiters=config.max_waiting, max_wait=config.max_wait),
            max_size=config.max_upstreams, idle=lambda b: b.idle)
        self._budgets: KeyedRegistry[str, RetryBudget] = KeyedRegistry(
            lambda _: RetryBudget(config.retry_ratio, min_retries=config.min_retries,
                                  clock=clock),
            max_size=config.max_upstreams)

    def breaker(self, instance: Instance) -> CircuitBreaker:
        """The breaker of `instance` (for health pages and tests)."""
        return self._breakers.get(_key(instance))

    def breakers(self) -> list[CircuitBreaker]:
        """Every breaker the client holds now, one per upstream instance (metrics)."""
        breakers = self._breakers
        return [b for key in list(breakers) if (b := breakers.peek(key)) is not None]

    async def request(self, method: str, service: str, path: str, *,
                      params: Mapping[str, Any] | None = None, json: Any = _UNSET,
                      content: Body = None, headers: Headers | None = None,
                      auth: Auth | None = None, idempotency_key: str | None = None,
                      timeout: float | None = None, deadline: float | None = None,
                      attempts: int | None = None,
                      raise_for_status: bool = False) -> Response:
        """Send `method path` to `service`; return its answer with the body read."""
        call = await self._prepare(method, service, path, params, json, content, headers,
                                   auth, idempotency_key, timeout, deadline, attempts)
        response = await self._send(call, stream=False)
        return response.raise_for_status() if raise_for_status else response

    @asynccontextmanager
    async def stream(self, method: str, service: str, path: str, *,
                     params: Mapping[str, Any] | None = None, json: Any = _UNSET,
                     content: Body = None, headers: Headers | None = None,
                     auth: Auth | None = None, idempotency_key: str | None = None,
                     timeout: float | None = None, deadline: float | None = None,
                     attempts: int | None = None, read_up_to: int = 0,
                     raise_for_status: bool = False) -> AsyncIterator[Response]:
        """`async with client.stream(...) as response:` read the body as it arrives
        (`aiter_bytes()`). Timeouts and retries cover the call up to the headers; the
        bulkhead slot is held until the block ends.

        A body whose declared `Content-Length` is at most `read_up_to` bytes is read within
        the attempt instead, as `request` reads it: an upstream that breaks off in the middle
        of it counts against its breaker and is retried like any failed attempt, rather than
        surfacing half-way through the caller's own answer (a proxy's client would get a cut
        connection where a retry or a clean 502 was possible)."""
        call = await self._prepare(method, service, path, params, json, content, headers,
                                   auth, idempotency_key, timeout, deadline, attempts,
                                   read_up_to)
        response = await self._send(call, stream=True)
        try:
            yield response.raise_for_status() if raise_for_status else response
        finally:
            await response.aclose()

    async def forward(self, method: str, service: str, target: str,
                      headers: list[tuple[str, str]], content: Body, *, timeout: float,
                      deadline: float, attempts: int, read_up_to: int = 0) -> Response:
        """A proxy's call: `stream()` for a request that is already in shape, without the
        per-call work a proxy does not need. `method` is upper case, `target` the path (and
        query) as it goes on the wire; `headers` go as they are (no identity of the
        client's own: a proxy passes its caller's `Authorization` on), plus the request and
        correlation ids and trace headers when they do not carry them. Timeouts and retries
        cover the call up to the headers, as `stream()`'s; the caller must
        `await response.aclose()` when done with the answer (the bulkhead slot is held till
        then)."""
        streamed = content is not None and not isinstance(content, bytes)
        retry = self._policy(attempts)
        call = _Call(method, service, target, _with_ids(headers), content,
                     method in IDEMPOTENT_METHODS and not streamed, timeout, deadline, retry,
                     read_up_to)
        return await self._send(call, stream=True)

    async def get(self, service: str, path: str, **options: Any) -> Response:
        return await self.request("GET", service, path, **options)

    async def head(self, service: str, path: str, **options: Any) -> Response:
        return await self.request("HEAD", service, path, **options)

    async def post(self, service: str, path: str, **options: Any) -> Response:
        return await self.request("POST", service, path, **options)

    async def put(self, service: str, path: str, **options: Any) -> Response:
        return await self.request("PUT", service, path, **options)

    async def patch(self, service: str, path: str, **options: Any) -> Response:
        return await self.request("PATCH", service, path, **options)

    async def delete(self, service: str, path: str, **options: Any) -> Response:
        return await self.request("DELETE", service, path, **options)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._transport.aclose()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # --- one call ---------------------------------------------------------------------------

    async def _prepare(self, method: str, service: str, path: str,
                       params: Mapping[str, Any] | None, json: Any, content: Body,
                       headers: Headers | None, auth: Auth | None,
                       idempotency_key: str | None, timeout: float | None,
                       deadline: float | None, attempts: int | None,
                       read_up_to: int = 0) -> _Call:
        method = method.upper()
        sent = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        given = {name.lower() for name, _ in sent}
        extra = _ids()
        if "authorization" not in given:
            authorization = await (auth or self._auth).authorization()
            if authorization:
                extra.append(("Authorization", authorization))
        if json is not _UNSET:
            content = jsonlib.dumps(json, separators=(",", ":")).encode()
            extra.append(("Content-Type", "application/json"))
        if idempotency_key:
            extra.append(("Idempotency-Key", idempotency_key))
        extra += trace_headers()  # the callee's server span continues the current one
        sent += [(name, value) for name, value in extra if name.lower() not in given]
        target = path if path.startswith("/") else f"/{path}"
        if params:
            target = f"{target}?{urlencode(params, doseq=True)}"
        retry = self._policy(attempts)
        streamed = content is not None and not isinstance(content, bytes)
        return _Call(method, service, target, tuple(sent), content,
                     may_retry(method, idempotency_key) and not streamed,
                     timeout or self.config.timeout, deadline or self.config.deadline, retry,
                     max(read_up_to, 0))

    def _policy(self, attempts: int | None) -> RetryPolicy:
        """The retry policy with `attempts` tries (made once per count asked for)."""
        retry = self.config.retry
        if attempts is not None and attempts != retry.max_attempts:
            retry = self._policies.get(attempts) or self._policies.setdefault(
                attempts, replace(retry, max_attempts=attempts))
        return retry

    async def _send(self, call: _Call, *, stream: bool) -> Response:
        budget = self._budgets.get(call.service)
        budget.record_call()
        deadline_at = self._clock() + call.deadline
        tried: set[_Key] = set()
        attempt = 1
        while True:
            instance = await self._choose(call.service, tried)
            tried.add(_key(instance))
            try:
                return await self._attempt(call, instance, deadline_at, stream=stream)
            except _RetryableError as failed:
                delay = None
                if call.retryable or not failed.sent:
                    delay = retry_delay(call.retry, attempt, failed.retry_after,
                                        deadline_at - self._clock())
                if delay is None or not budget.try_spend():
                    raise failed.error from failed.error.__cause__
            await asyncio.sleep(delay)
            attempt += 1

    async def _choose(self, service: str, tried: set[_Key]) -> Instance:
        try:
            instances = await self._registry.discover(service)
        except RegistryError as exc:
            raise UpstreamUnavailableError(service, f"registry: {exc}") from exc
        if not instances:
            raise UpstreamUnavailableError(service, "no instance is registered")
        if self._instance_filter is not None:
            known = len(instances)
            instances = [i for i in instances if self._instance_filter(i)]
            if not instances:
                raise UpstreamUnavailableError(
                    service, f"none of the {known} instances passes its health check")
        allowed = [i for i in instances if self._breakers.get(_key(i)).allows()]
        if not allowed:
            wait = min(self._breakers.get(_key(i)).retry_after() for i in instances)
            raise UpstreamUnavailableError(
                service, f"the circuit of all {len(instances)} instances is open",
                retry_after=wait)
        untried = [i for i in allowed if _key(i) not in tried]
        return self._balancer.pick(untried or allowed, _key)

    async def _attempt(self, call: _Call, instance: Instance, deadline_at: float, *,
                       stream: bool) -> Response:
        service, key = call.service, _key(instance)
        what = f"{call.method} {service}{call.target}"
        bulkhead = self._bulkheads.get(service)
        try:  # the wait for a slot is part of the call: it comes out of the deadline
            # A free slot needs no timer (a deadline already passed still meets the timer).
            if deadline_at <= self._clock() or not bulkhead.try_acquire():
                async with call_timeout(deadline_at - self._clock(), f"{what}: a slot"):
                    await bulkhead.acquire()
        except BulkheadFullError as exc:
            raise UpstreamUnavailableError(service, str(exc)) from exc
        except CallTimeoutError as exc:
            raise UpstreamTimeoutError(service, f"the deadline passed waiting: {exc}") from exc
        try:
            permit = self._breakers.get(key).acquire()
        except CircuitOpenError as exc:  # opened while we waited for the slot
            bulkhead.release()
            raise _RetryableError(_caused(UpstreamUnavailableError(service, str(exc)), exc),
                                  sent=False) from exc
        self._balancer.started(key)
        limit = min(call.timeout, deadline_at - self._clock())

        def done() -> None:
            self._balancer.finished(key)
            bulkhead.release()

        raw: RawResponse | None = None
        content: bytes | None = None
        try:
            async with call_timeout(limit, what):
                raw = await self._transport.open(call.method, instance.url + call.target,
                                                 call.headers, call.content)
                if not stream or _declared_length(raw) <= call.read_up_to:
                    content = await raw.read()
        except BaseException as exc:
            done()
            permit.error(exc)
            if raw is not None:
                await raw.close()
            if isinstance(exc, CallTimeoutError):
                raise _RetryableError(
                    _caused(UpstreamTimeoutError(service, str(exc)), exc)) from exc
            if isinstance(exc, ConnectFailedError):  # nothing was sent: any method may go again
                raise _RetryableError(_caused(UpstreamUnavailableError(service, str(exc)), exc),
                                      sent=False) from exc
            if isinstance(exc, ExchangeFailedError):
                raise _RetryableError(
                    _caused(UpstreamBadResponseError(service, str(exc)), exc)) from exc
            raise
        if raw.status >= 500:
            permit.failure()
            done()
            if stream:
                await raw.close()
            error = UpstreamBadResponseError(service, f"{instance.url} answered {raw.status}",
                                             status=raw.status)
            if raw.status in RETRY_STATUSES:
                raise _RetryableError(error, parse_retry_after(raw.headers.get("Retry-After")))
            raise error
        permit.success()
        if stream and content is None:
            return Response(service, raw, None, on_close=done)
        done()
        return Response(service, raw, content)


def _ids() -> list[tuple[str, str]]:
    """The request and correlation ids of the current request (new ones outside one)."""
    current, ids = context.current(), correlation.current()
    request_id = current.request_id if current else context.new_id()
    return [(context.REQUEST_ID_HEADER, request_id),
            (correlation.CORRELATION_ID_HEADER, ids.correlation_id if ids else request_id)]


_OWN = frozenset({context.REQUEST_ID_HEADER.lower(), correlation.CORRELATION_ID_HEADER.lower(),
                  "traceparent", "tracestate"})


def _with_ids(headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """`headers` and the ids and trace headers they do not carry already."""
    extra = _ids() + trace_headers()
    if any(name.lower() in _OWN for name, _ in headers):
        given = {name.lower() for name, _ in headers}
        extra = [(name, value) for name, value in extra if name.lower() not in given]
    return (*headers, *extra)


def _declared_length(raw: RawResponse) -> int:
    """The body's `Content-Length`, or a length no limit admits when it has none (a stream)
    or an unreadable one."""
    pairs = getattr(raw, "raw_headers", None)  # bytes, when the transport keeps them
    if pairs is not None:
        for name, value in pairs:
            if len(name) == 14 and name.lower() == b"content-length":
                return int(value) if value.isdigit() else _NO_LENGTH
        return _NO_LENGTH
    text = raw.headers.get("content-length")
    if text is None or not text.isdigit():
        return _NO_LENGTH
    return int(text)


_NO_LENGTH = 1 << 62


def _caused(error: UpstreamError, cause: BaseException) -> UpstreamError:
    error.__cause__ = cause
    return error
