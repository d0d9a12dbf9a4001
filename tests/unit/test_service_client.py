"""ServiceClient over an in-memory transport: what it sends, which failures it retries and how
it reports them. The same behaviour over real HTTP: tests/integration/test_service_client.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from multidict import CIMultiDict

from core import correlation
from core.http import (
    ClientConfig,
    ForwardCaller,
    ServiceClient,
    ServiceToken,
    UpstreamBadResponseError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from core.http.context import RequestContext, bound
from core.http.transport import ConnectFailedError, ExchangeFailedError, RawResponse
from core.resilience import BreakerConfig, RetryPolicy
from core.service_registry import Instance, RegistryError
from tests.fixed_registry import FixedRegistry
from tests.helpers import eventually


@dataclass
class Raw:
    status: int
    body: bytes = b"{}"
    headers: Mapping[str, str] = field(default_factory=CIMultiDict)
    closed: bool = False

    async def read(self) -> bytes:
        self.closed = True
        return self.body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        yield self.body

    async def close(self) -> None:
        self.closed = True


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


Answer = Callable[[Sent], Awaitable[Raw]]


class Transport:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sent: list[Sent] = []
        self.closed = False

    async def open(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   content: bytes | None) -> RawResponse:
        sent = Sent(method, url, dict(headers), content)
        self.sent.append(sent)
        return await self.answer(sent)

    async def aclose(self) -> None:
        self.closed = True


def answering(*statuses: int, headers: Mapping[str, str] | None = None) -> Answer:
    """Answers the statuses in turn, the last one for ever."""
    queue = list(statuses)

    async def answer(sent: Sent) -> Raw:
        status = queue.pop(0) if len(queue) > 1 else queue[0]
        return Raw(status, headers=CIMultiDict(headers or {}))
    return answer


def raising(exc: Exception) -> Answer:
    async def answer(sent: Sent) -> Raw:
        raise exc
    return answer


def make(answer: Answer, urls: Sequence[str] = ("http://b1", "http://b2"),
         **config: object) -> tuple[ServiceClient, Transport]:
    transport = Transport(answer)
    settings: dict[str, object] = {
        "retry": RetryPolicy(max_attempts=3, initial_delay=0, max_delay=0),
        "breaker": BreakerConfig(min_calls=1000), **config}
    client = ServiceClient(FixedRegistry({"b": list(urls)}),
                           config=ClientConfig(**settings),  # type: ignore[arg-type]
                           transport=transport)
    return client, transport


async def test_sends_ids_identity_body_and_query() -> None:
    async def token() -> str:
        return "svc"

    client, transport = make(answering(200))
    with bound(RequestContext("r-1", "Bearer user")), correlation.bound("c-1", "event-1"):
        await client.post("b", "orders", json={"n": 1}, params={"a": "x y", "b": [1, 2]},
                          idempotency_key="k-1", auth=ForwardCaller())
        await client.get("b", "/orders", auth=ServiceToken(token),
                         headers={"X-Request-ID": "mine", "Accept": "text/plain"})
    first, second = transport.sent
    assert first.method == "POST"
    assert first.url.endswith("/orders?a=x+y&b=1&b=2")
    assert first.content == b'{"n":1}'
    assert first.headers == {"X-Request-ID": "r-1", "X-Correlation-ID": "c-1",
                             "Authorization": "Bearer user",
                             "Content-Type": "application/json", "Idempotency-Key": "k-1"}
    assert second.headers == {"X-Request-ID": "mine", "Accept": "text/plain",
                              "X-Correlation-ID": "c-1", "Authorization": "Bearer svc"}
    assert second.content is None


async def test_a_callers_own_authorization_header_wins() -> None:
    async def token() -> str:
        raise AssertionError("not asked when the caller set the header")

    client, transport = make(answering(200))
    await client.get("b", "/x", headers={"authorization": "Basic abc"}, auth=ServiceToken(token))
    assert transport.sent[0].headers["authorization"] == "Basic abc"


async def test_a_500_is_not_retried_and_a_503_is_on_the_other_instance() -> None:
    client, transport = make(answering(500))
    with pytest.raises(UpstreamBadResponseError) as failed:
        await client.get("b", "/x")
    assert failed.value.status == 500 and len(transport.sent) == 1

    client, transport = make(answering(503, 200))
    response = await client.get("b", "/x")
    assert response.status_code == 200
    assert [s.url for s in transport.sent] in (["http://b1/x", "http://b2/x"],
                                               ["http://b2/x", "http://b1/x"])


@pytest.mark.parametrize(("exc", "raised", "post_attempts"), [
    # nothing was sent: any method; it may have been: only the idempotent
    (ConnectFailedError("refused"), UpstreamUnavailableError, 3),
    (ExchangeFailedError("reset"), UpstreamBadResponseError, 1),
])
async def test_transport_failures_are_retried_then_typed(exc: Exception,
                                                         raised: type[Exception],
                                                         post_attempts: int) -> None:
    client, transport = make(raising(exc))
    with pytest.raises(raised) as failed:
        await client.get("b", "/x")
    assert failed.value.__cause__ is exc
    assert len(transport.sent) == 3
    client, transport = make(raising(exc))
    with pytest.raises(raised):
        await client.post("b", "/x")
    assert len(transport.sent) == post_attempts


async def test_a_post_whose_connection_was_never_opened_goes_to_another_instance() -> None:
    async def b1_is_down(sent: Sent) -> Raw:
        if sent.url.startswith("http://b1"):
            raise ConnectFailedError("refused")
        return Raw(201)

    client, transport = make(b1_is_down)
    for _ in range(4):  # the instances take turns: b1 is picked first for some of them
        response = await client.post("b", "/orders", json={"n": 1})
        assert response.status_code == 201
    assert len(transport.sent) > 4  # b1 was tried first at least once
    assert [s.content for s in transport.sent if s.url.startswith("http://b2")] == \
        [b'{"n":1}'] * 4


async def test_all_circuits_open_fails_fast_with_retry_after() -> None:
    client, transport = make(answering(503), breaker=BreakerConfig(min_calls=1, open_for=30),
                             retry=RetryPolicy(max_attempts=1))
    for _ in range(2):
        with pytest.raises(UpstreamBadResponseError):
            await client.get("b", "/x")
    with pytest.raises(UpstreamUnavailableError) as refused:
        await client.get("b", "/x")
    assert refused.value.headers == {"Retry-After": "30"}
    assert len(transport.sent) == 2


async def test_no_instance_or_no_registry_is_unavailable() -> None:
    client, transport = make(answering(200), urls=())
    with pytest.raises(UpstreamUnavailableError, match="no instance"):
        await client.get("b", "/x")

    class Broken(FixedRegistry):
        async def discover(self, service: str) -> list[Instance]:
            raise RegistryError("kafka away")

    broken = ServiceClient(Broken({}), transport=transport)
    with pytest.raises(UpstreamUnavailableError, match="kafka away") as failed:
        await broken.get("b", "/x")
    assert failed.value.message == "Service 'b' is unavailable"
    assert transport.sent == []


async def test_the_deadline_bounds_the_whole_call() -> None:
    async def hang(sent: Sent) -> Raw:
        await asyncio.Event().wait()
        raise AssertionError

    client, transport = make(hang, timeout=30, deadline=0.05)
    with pytest.raises(UpstreamTimeoutError, match="timed out after"):
        await client.get("b", "/x")
    assert len(transport.sent) == 1  # no time left for another try
    assert client._bulkheads.get("b").idle


async def test_the_wait_for_a_bulkhead_slot_comes_out_of_the_deadline() -> None:
    gate = asyncio.Event()

    async def answer(sent: Sent) -> Raw:
        if sent.url.endswith("/hold"):
            await gate.wait()
            return Raw(200)
        await asyncio.Event().wait()  # never answers: only the deadline ends it
        raise AssertionError

    client, _ = make(answer, max_in_flight=1, max_waiting=5, max_wait=30.0,
                     timeout=30.0, deadline=30.0)
    holder = asyncio.create_task(client.get("b", "/hold"))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match="waiting"):  # no slot within its deadline
        await client.get("b", "/x", deadline=0.3)
    assert time.monotonic() - started < 5  # not the bulkhead's own 30 s
    assert client._bulkheads.get("b").waiting == 0

    waiter = asyncio.create_task(client.get("b", "/x", deadline=1.0))
    started = time.monotonic()
    await eventually(lambda: client._bulkheads.get("b").waiting == 1, timeout=5)
    await asyncio.sleep(0.6)  # the slot frees with 0.4 s of the deadline left
    gate.set()
    with pytest.raises(UpstreamTimeoutError):
        await waiter
    assert time.monotonic() - started < 1.4  # the attempt got what was left, not a second
    assert (await holder).status_code == 200
    assert client._bulkheads.get("b").idle


async def test_a_bulkhead_full_is_unavailable_and_not_retried() -> None:
    gate = asyncio.Event()

    async def wait(sent: Sent) -> Raw:
        await gate.wait()
        return Raw(200)

    client, transport = make(wait, max_in_flight=1, max_waiting=0)
    first = asyncio.create_task(client.get("b", "/x"))
    await asyncio.sleep(0)
    with pytest.raises(UpstreamUnavailableError, match="bulkhead"):
        await client.get("b", "/x")
    gate.set()
    assert (await first).status_code == 200
    assert len(transport.sent) == 1


async def test_streams_hold_the_slot_until_closed_and_aclose_closes_the_pool() -> None:
    raw = Raw(200, body=b"abc")

    async def answer(sent: Sent) -> Raw:
        return raw

    client, transport = make(answer)
    async with client.stream("GET", "b", "/s") as response:
        assert client._bulkheads.get("b").in_use == 1
        assert [c async for c in response.aiter_bytes()] == [b"abc"]
        with pytest.raises(RuntimeError, match="aread"):
            _ = response.content
    assert raw.closed and client._bulkheads.get("b").idle
    async with client:
        pass
    assert transport.closed


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="timeout and deadline"):
        ClientConfig(timeout=0)
    with pytest.raises(ValueError, match="timeout and deadline"):
        ClientConfig(deadline=-1)


async def test_attempts_per_call_override_the_policy() -> None:
    client, transport = make(raising(ConnectFailedError("refused")))
    with pytest.raises(UpstreamUnavailableError):
        await client.get("b", "/x", attempts=1)
    assert len(transport.sent) == 1
    client, transport = make(raising(ConnectFailedError("refused")))
    with pytest.raises(UpstreamUnavailableError):
        await client.get("b", "/x", attempts=5)
    assert len(transport.sent) == 5


async def test_a_streamed_body_is_passed_on_and_retried_only_if_never_sent() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    body = chunks()
    client, transport = make(raising(ExchangeFailedError("reset")))
    with pytest.raises(UpstreamBadResponseError):
        await client.put("b", "/x", content=body)  # PUT is idempotent, but the body is spent
    assert len(transport.sent) == 1
    assert transport.sent[0].content is body
    client, transport = make(raising(ConnectFailedError("refused")))
    with pytest.raises(UpstreamUnavailableError):
        await client.post("b", "/x", content=body)  # no connection: none of it was taken
    assert [s.content for s in transport.sent] == [body] * 3


async def test_headers_as_pairs_keep_repeated_names() -> None:
    client, transport = make(answering(200))
    seen: list[tuple[str, str]] = []
    original = transport.open

    async def recording(method: str, url: str, headers: Sequence[tuple[str, str]],
                        content: bytes | None) -> RawResponse:
        seen.extend(headers)
        return await original(method, url, headers, content)

    transport.open = recording  # type: ignore[method-assign]
    await client.get("b", "/x", headers=[("Accept", "a/b"), ("Accept", "c/d")])
    assert [v for k, v in seen if k == "Accept"] == ["a/b", "c/d"]


async def test_an_instance_filter_leaves_out_unwell_instances() -> None:
    transport = Transport(answering(200))
    client = ServiceClient(FixedRegistry({"b": ["http://b1", "http://b2"]}),
                           transport=transport,
                           instance_filter=lambda i: i.url != "http://b1")
    for _ in range(4):
        await client.get("b", "/x")
    assert {s.url for s in transport.sent} == {"http://b2/x"}
    nobody = ServiceClient(FixedRegistry({"b": ["http://b1"]}), transport=transport,
                           instance_filter=lambda i: False)
    with pytest.raises(UpstreamUnavailableError) as failed:
        await nobody.get("b", "/x")
    assert "health check" in str(failed.value)


async def test_forward_sends_the_headers_as_given_with_the_ids_and_no_identity_of_its_own(
) -> None:
    async def token() -> str:
        return "svc"

    transport = Transport(answering(503, 200, 200, 503))
    client = ServiceClient(FixedRegistry({"b": ["http://b1"]}), auth=ServiceToken(token),
                           transport=transport, config=ClientConfig(
                               retry=RetryPolicy(max_attempts=3, initial_delay=0, max_delay=0),
                               breaker=BreakerConfig(min_calls=1000)))
    with bound(RequestContext("r-1", "Bearer user")), correlation.bound("c-1"):
        response = await client.forward("GET", "b", "/a%20b?q=1", [("accept", "text/plain")],
                                        None, timeout=1.0, deadline=5.0, attempts=2)
        await response.aclose()
        given = await client.forward("GET", "b", "/x", [("x-request-id", "mine")], None,
                                     timeout=1.0, deadline=5.0, attempts=1)
        await given.aclose()
    with pytest.raises(UpstreamBadResponseError):  # one attempt: the 503 is the answer
        await client.forward("POST", "b", "/x", [], b"{}", timeout=1.0, deadline=5.0,
                             attempts=3)  # a POST without a key is never retried
    first, retried, own, post = transport.sent
    assert first.url == retried.url == "http://b1/a%20b?q=1"  # the 503 was retried
    assert first.headers == {"accept": "text/plain", "X-Request-ID": "r-1",
                             "X-Correlation-ID": "c-1"}  # not its ServiceToken
    assert own.headers == {"x-request-id": "mine", "X-Correlation-ID": "c-1"}
    assert response.status_code == 200 and response.buffered is None
    assert post.content == b"{}"
