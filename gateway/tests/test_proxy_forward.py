"""`Proxy.forward` without processes: the real `ServiceClient` over an in-memory transport,
driven as the ASGI server drives it (`receive`/`send`). What goes upstream (path, query,
headers, body whole or streamed), what comes back (status, headers, body whole or as a
stream under the stream caps), cut streams, a leaving client and redirects. The same over
real HTTP between processes: test_gateway_proxy.py, test_gateway_connections.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDict
from starlette.types import Message

from core.http import ClientConfig, ExchangeFailedError, ServiceClient
from core.resilience import BreakerConfig, RetryPolicy
from gateway.config import GatewaySettings
from gateway.errors import GatewayError
from gateway.proxy import ClientGoneError, Proxy, StreamStalledError, _public_path
from gateway.routes.table import Route
from tests.fixed_registry import FixedRegistry

UPSTREAM = "http://10.0.0.7:9101"


@dataclass
class Raw:
    """An upstream's answer: `chunks` in turn, then `end` (None: the body ends; an exception:
    raised; an Event: waits for it, then ends)."""

    status: int = 200
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    chunks: Sequence[bytes] = (b"ok",)
    end: Exception | asyncio.Event | None = None
    closed: bool = False

    async def read(self) -> bytes:
        return b"".join([c async for c in self.iter_chunks()])

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if isinstance(self.end, Exception):
            raise self.end
        if self.end is not None:
            await self.end.wait()

    async def close(self) -> None:
        self.closed = True


@dataclass
class Sent:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None
    streamed: bool


class Transport:
    """Answers `answers` in turn (the last for ever); `hang`: never answers; each exchange
    moves `clock` on by `takes` seconds."""

    def __init__(self, *answers: Raw) -> None:
        self.answers = list(answers)
        self.sent: list[Sent] = []
        self.hang = False
        self.clock = [0.0]
        self.takes = 0.0
        self.reads_body = True

    async def open(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   content: bytes | AsyncIterable[bytes] | None) -> Raw:
        streamed = content is not None and not isinstance(content, bytes)
        body = (b"".join([c async for c in content])  # type: ignore[union-attr]
                if streamed and self.reads_body else None if streamed else content)
        self.sent.append(Sent(method, url, list(headers), body, streamed))  # type: ignore[arg-type]
        self.clock[0] += self.takes
        if self.hang:
            await asyncio.Event().wait()
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def aclose(self) -> None: ...


def proxy(*answers: Raw, max_body: int = 100, buffer: int = 10, discover: bool = True,
          real_clock: bool = False) -> tuple[Proxy, Transport]:
    transport = Transport(*answers)
    registry = FixedRegistry({"auth": [UPSTREAM]})
    clock = time.monotonic if real_clock else lambda: transport.clock[0]
    client = ServiceClient(registry, transport=transport, clock=clock, config=ClientConfig(
        retry=RetryPolicy(max_attempts=3, initial_delay=0, max_delay=0),
        breaker=BreakerConfig(min_calls=1000)))
    settings = GatewaySettings(gateway_max_body_bytes=max_body, gateway_buffer_bytes=buffer)
    return Proxy(client, settings, registry.discover if discover else None), transport


ROUTE = Route(name="auth", prefix="/api/auth", service="auth", rewrite="/auth", retries=1,
              idle_timeout=5.0)


class Client:
    """The ASGI side: the request's messages in turn (then, once `leave` is set, a
    disconnect), and what the proxy sent back."""

    def __init__(self, *body: Message) -> None:
        self.body = list(body)
        self.leave = asyncio.Event()
        self.sent: list[Message] = []
        self.streaming = asyncio.Event()

    async def receive(self) -> Message:
        if self.body:
            return self.body.pop(0)
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message.get("more_body"):
            self.streaming.set()

    @property
    def start(self) -> Message:
        assert self.sent[0]["type"] == "http.response.start"
        return self.sent[0]

    @property
    def body_bytes(self) -> bytes:
        assert all(m["type"] == "http.response.body" for m in self.sent[1:])
        return b"".join(m["body"] for m in self.sent[1:])

    @property
    def finished(self) -> bool:
        return self.sent[-1] == {"type": "http.response.body", "body": b"",
                                 "more_body": False}


def scope(method: str = "GET", headers: Sequence[tuple[bytes, bytes]] = (),
          query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": method, "headers": list(headers), "query_string": query}


async def forward(p: Proxy, client: Client, path: str = "/auth/x", route: Route = ROUTE,
                  **options: Any) -> None:
    await p.forward(options.pop("scope", scope()), client.receive, client.send, route, path,
                    options.pop("extra", []), options.pop("response_headers", []),
                    options.pop("who", "1.2.3.4"))


def length(n: int) -> CIMultiDict[str]:
    return CIMultiDict({"Content-Length": str(n)})


async def test_the_request_goes_to_the_upstream_path_with_its_query_and_headers() -> None:
    p, transport = proxy(Raw(headers=length(2)))
    client = Client()
    await forward(p, client, "/auth/a b/ü", scope=scope(
        "GET", [(b"accept", b"text/plain"), (b"host", b"example.org")], b"q=1&r=%20"),
        extra=[(b"x-request-id", b"r-1")])
    [sent] = transport.sent
    assert sent.method == "GET"
    assert sent.url == f"{UPSTREAM}/auth/a%20b/%C3%BC?q=1&r=%20"
    assert ("accept", "text/plain") in sent.headers and ("x-request-id", "r-1") in sent.headers
    assert not any(k == "host" for k, _ in sent.headers)
    assert sent.body is None


async def test_a_small_answer_is_passed_whole_with_its_headers() -> None:
    headers = CIMultiDict({"Content-Length": "5", "Content-Type": "text/plain",
                           "Server": "uvicorn", "Date": "today", "Connection": "close"})
    p, _ = proxy(Raw(201, headers, chunks=(b"he", b"llo")))
    client = Client()
    await forward(p, client, response_headers=[(b"x-request-id", b"r-1")])
    assert client.start == {"type": "http.response.start", "status": 201, "headers": [
        (b"content-length", b"5"), (b"content-type", b"text/plain"), (b"x-request-id", b"r-1")]}
    assert client.body_bytes == b"hello" and client.finished
    assert p.streams.open("auth") == 0


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_an_answer_without_a_body_is_not_a_stream(method: str, status: int) -> None:
    p, _ = proxy(Raw(status, chunks=()))
    full = Route(name="auth", prefix="/api/auth", service="auth", max_client_streams=0)
    client = Client()
    await forward(p, client, route=full, scope=scope(method))  # no stream slot needed
    assert client.start["status"] == status and client.finished and client.body_bytes == b""


async def test_a_large_or_unsized_answer_is_a_stream_under_the_caps() -> None:
    gate = asyncio.Event()
    p, _ = proxy(Raw(headers=length(11), chunks=(b"hello ", b"", b"world"), end=gate))
    client = Client()
    task = asyncio.create_task(forward(p, client))
    await client.streaming.wait()
    assert (p.streams.open("auth"), p.streams.open("auth", "1.2.3.4")) == (1, 1)
    gate.set()
    await task
    assert client.body_bytes == b"hello world" and client.finished
    assert [m["body"] for m in client.sent[1:]] == [b"hello ", b"world", b""]
    assert p.streams.open("auth") == 0
    full = Route(name="auth", prefix="/api/auth", service="auth", max_client_streams=0)
    with pytest.raises(GatewayError) as refused:
        await forward(p, Client(), route=full)
    assert refused.value.status == 429


async def test_an_answer_of_exactly_the_buffer_size_is_read_whole() -> None:
    p, _ = proxy(Raw(headers=length(10), chunks=(b"0123456789",)))
    full = Route(name="auth", prefix="/api/auth", service="auth", max_client_streams=0)
    client = Client()
    await forward(p, client, route=full)
    assert client.body_bytes == b"0123456789" and client.finished


async def test_a_stream_that_breaks_off_or_stalls_is_cut() -> None:
    broken = Raw(chunks=(b"part",), end=ExchangeFailedError("reset"))
    p, _ = proxy(broken)
    client = Client()
    await forward(p, client)
    assert client.start["status"] == 200 and client.body_bytes == b"part"
    assert not client.finished
    stalled, _ = proxy(Raw(chunks=(b"part",), end=asyncio.Event()))
    slow = Route(name="auth", prefix="/api/auth", service="auth", idle_timeout=0.05)
    client = Client()
    async with asyncio.timeout(5):
        await forward(stalled, client, route=slow)
    assert client.body_bytes == b"part" and not client.finished
    assert stalled.streams.open("auth") == 0


async def test_a_client_that_leaves_ends_its_stream() -> None:
    never = asyncio.Event()
    raw = Raw(chunks=(b"event",), end=never)
    p, _ = proxy(raw)
    client = Client()
    task = asyncio.create_task(forward(p, client))
    await client.streaming.wait()
    client.leave.set()
    async with asyncio.timeout(5):
        await task
    assert raw.closed and not client.finished and p.streams.open("auth") == 0


async def test_a_small_body_is_read_whole_and_a_large_one_streams_with_its_length() -> None:
    p, transport = proxy(Raw(headers=length(2)))
    await forward(p, Client({"type": "http.request", "body": b"0123", "more_body": True},
                            {"type": "http.request", "body": b"456789"}),
                  scope=scope("POST", [(b"content-length", b"10")]))
    small = transport.sent[-1]
    assert (small.body, small.streamed) == (b"0123456789", False)
    assert not any(k == "content-length" for k, _ in small.headers)
    client = Client({"type": "http.request", "body": b"01234", "more_body": True},
                    {"type": "http.request", "body": b"", "more_body": True},
                    {"type": "http.request", "body": b"56789X"})
    await forward(p, client, scope=scope("POST", [(b"content-length", b"11")]))
    large = transport.sent[-1]
    assert (large.body, large.streamed) == (b"0123456789X", True)
    assert ("content-length", "11") in large.headers


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read() -> None:
    p, transport = proxy(Raw())
    client = Client({"type": "http.request", "body": b"x"})
    with pytest.raises(GatewayError) as refused:
        await forward(p, client, scope=scope("POST", [(b"content-length", b"101")]))
    assert refused.value.status == 413 and "100 bytes" in refused.value.message
    assert client.body and not transport.sent
    await forward(p, Client({"type": "http.request", "body": b"x" * 100}),
                  scope=scope("POST", [(b"content-length", b"100")]))
    assert transport.sent[-1].body == b"x" * 100


async def test_a_chunked_body_is_read_up_to_the_limit() -> None:
    p, transport = proxy(Raw())
    chunked = [(b"transfer-encoding", b"chunked")]
    await forward(p, Client({"type": "http.request", "body": b"x" * 60, "more_body": True},
                            {"type": "http.request", "body": b"y" * 40}),
                  scope=scope("POST", chunked))
    assert transport.sent[-1].body == b"x" * 60 + b"y" * 40
    assert not transport.sent[-1].streamed
    with pytest.raises(GatewayError) as refused:
        await forward(p, Client({"type": "http.request", "body": b"x" * 60, "more_body": True},
                                {"type": "http.request", "body": b"y" * 41}),
                      scope=scope("POST", chunked))
    assert refused.value.status == 413 and len(transport.sent) == 1


async def test_a_client_leaving_during_its_upload_sends_nothing_upstream() -> None:
    p, transport = proxy(Raw())
    client = Client({"type": "http.request", "body": b"x", "more_body": True})
    client.leave.set()
    with pytest.raises(ClientGoneError):
        await forward(p, client, scope=scope("POST", [(b"transfer-encoding", b"chunked")]))
    assert not transport.sent


async def test_a_redirect_to_an_upstream_instance_gets_the_public_path() -> None:
    found = CIMultiDict({"Location": f"{UPSTREAM}/auth/next/?a=1", "Content-Length": "0"})
    p, _ = proxy(Raw(307, found, chunks=()))
    client = Client()
    await forward(p, client)
    assert (b"location", b"/api/auth/next/?a=1") in client.start["headers"]
    elsewhere = CIMultiDict({"Location": "https://idp.example/login", "Content-Length": "0"})
    p, _ = proxy(Raw(302, elsewhere, chunks=()))
    client = Client()
    await forward(p, client)
    assert (b"location", b"https://idp.example/login") in client.start["headers"]
    unknown, _ = proxy(Raw(302, found, chunks=()), discover=False)
    client = Client()
    await forward(unknown, client)  # no instance known: not ours to change
    assert (b"location", f"{UPSTREAM}/auth/next/?a=1".encode()) in client.start["headers"]


async def test_a_location_outside_a_redirect_is_left_alone() -> None:
    created = CIMultiDict({"Location": f"{UPSTREAM}/auth/u/1", "Content-Length": "0"})
    p, _ = proxy(Raw(201, created, chunks=()))
    client = Client()
    await forward(p, client)
    assert (b"location", f"{UPSTREAM}/auth/u/1".encode()) in client.start["headers"]


async def test_an_upstream_failure_becomes_the_gateways_refusal() -> None:
    p, transport = proxy(Raw(503, length(0), chunks=()))
    with pytest.raises(GatewayError) as refused:
        await forward(p, Client())
    assert refused.value.status == 503 and len(transport.sent) == 2  # retries + 1


def _leaving(*body: Message) -> Client:
    client = Client(*body)
    client.leave.set()
    return client


async def test_without_a_client_name_streams_count_under_the_empty_one() -> None:
    gate = asyncio.Event()
    p, _ = proxy(Raw(chunks=(b"a",), end=gate))
    client = Client()
    task = asyncio.create_task(p.forward(scope(), client.receive, client.send, ROUTE, "/auth",
                                         [], []))
    await client.streaming.wait()
    assert p.streams.open("auth", "") == 1
    gate.set()
    await task


async def test_the_path_keeps_the_characters_a_path_may_hold() -> None:
    p, transport = proxy(Raw(headers=length(2)))
    await forward(p, Client(), "/auth/a:b@c;d=e,f!$&'()*+-._~")
    assert transport.sent[0].url == f"{UPSTREAM}/auth/a:b@c;d=e,f!$&'()*+-._~"


async def test_each_attempt_has_the_routes_timeout() -> None:
    p, transport = proxy(Raw(), real_clock=True)
    transport.hang = True
    quick = Route(name="auth", prefix="/api/auth", service="auth", timeout=0.05, retries=1)
    async with asyncio.timeout(1.0):  # the client's own default (5 s) would take the deadline
        with pytest.raises(GatewayError) as refused:
            await forward(p, Client(), route=quick)
    assert refused.value.status == 504 and len(transport.sent) == 2


@pytest.mark.parametrize(("retries", "calls"), [(2, 2), (3, 3)])
async def test_the_deadline_is_every_attempts_timeout_and_a_second(retries: int,
                                                                   calls: int) -> None:
    """Each exchange takes 2.1 s by the client's clock; the deadline is timeout x attempts
    + 1 s: 4 s for three attempts (the third would start after it), 5 s for four."""
    p, transport = proxy(Raw(503, length(0), chunks=()))
    transport.takes = 2.1
    slow = Route(name="auth", prefix="/api/auth", service="auth", timeout=1.0, retries=retries)
    with pytest.raises(GatewayError):
        await forward(p, Client(), route=slow)
    assert len(transport.sent) == calls


async def test_a_small_answer_that_breaks_off_is_retried_before_anything_is_sent() -> None:
    p, transport = proxy(Raw(headers=length(5), chunks=(b"he",), end=ExchangeFailedError("reset")))
    client = Client()
    with pytest.raises(GatewayError) as refused:
        await forward(p, client)
    assert refused.value.status == 502 and refused.value.code == "bad_gateway"
    assert client.sent == [] and len(transport.sent) == 2


async def test_a_client_that_does_not_take_a_small_answer_is_cut() -> None:
    p, _ = proxy(Raw(headers=length(2)))
    slow = Route(name="auth", prefix="/api/auth", service="auth", idle_timeout=0.05)
    client = Client()
    taken = asyncio.Event()

    async def stuck(message: Message) -> None:
        client.sent.append(message)
        if message["type"] == "http.response.body":
            await taken.wait()

    async with asyncio.timeout(5):
        with pytest.raises(StreamStalledError):
            await p.forward(scope(), client.receive, stuck, slow, "/auth", [], [], "c")


async def test_a_digit_header_is_no_length() -> None:
    p, _ = proxy(Raw(headers=CIMultiDict({"X-Count": "3"}), chunks=(b"abc",)))
    full = Route(name="auth", prefix="/api/auth", service="auth", max_client_streams=0)
    with pytest.raises(GatewayError) as refused:  # unsized: a stream, and none is allowed
        await forward(p, Client(), route=full)
    assert refused.value.status == 429


@pytest.mark.parametrize(("status", "rewritten"), [(300, True), (399, True), (400, False),
                                                   (299, False)])
async def test_only_a_redirect_status_has_its_location_rewritten(status: int,
                                                                 rewritten: bool) -> None:
    found = CIMultiDict({"Location": f"{UPSTREAM}/auth/next", "Content-Length": "0"})
    p, _ = proxy(Raw(status, found, chunks=()))
    client = Client()
    await forward(p, client)
    location = b"/api/auth/next" if rewritten else f"{UPSTREAM}/auth/next".encode()
    assert (b"location", location) in client.start["headers"]


@pytest.mark.parametrize(("location", "public"), [
    ("//other.example/auth/x", "//other.example/auth/x"),  # scheme-relative: another site
    (f"{UPSTREAM}?x=1", "/api/auth/?x=1"),
    (f"{UPSTREAM}/x#top", "/api/auth/x#top"),
])
async def test_redirect_locations_at_the_root_of_a_route(location: str, public: str) -> None:
    root = Route(name="auth", prefix="/api/auth", service="auth", rewrite="/")
    p, _ = proxy(Raw(302, CIMultiDict({"Location": location, "Content-Length": "0"}),
                     chunks=()))
    client = Client()
    await forward(p, client, route=root)
    assert (b"location", public.encode()) in client.start["headers"]


async def test_a_redirect_outside_the_route_is_a_502_that_says_so() -> None:
    p, _ = proxy(Raw(302, CIMultiDict({"Location": "/users/1", "Content-Length": "0"}),
                     chunks=()))
    with pytest.raises(GatewayError) as refused:
        await forward(p, Client())
    assert (refused.value.status, refused.value.code, refused.value.message) == (
        502, "bad_gateway", "The upstream redirected to a path outside this route")


def test_the_rewritten_root_maps_back_to_the_catch_all_root() -> None:
    assert _public_path("/v1", Route(name="r", prefix="/", service="s", rewrite="/v1")) == "/"


async def test_stopping_a_stream_leaves_no_task_behind() -> None:
    gate = asyncio.Event()
    p, _ = proxy(Raw(chunks=(b"a",), end=gate))
    client = Client()
    task = asyncio.create_task(forward(p, client))
    await client.streaming.wait()
    gate.set()
    await task  # the pump ended: the disconnect watcher is stopped
    assert asyncio.all_tasks() == {asyncio.current_task()}
    never = asyncio.Event()
    p, _ = proxy(Raw(chunks=(b"a",), end=never))
    client = Client()
    task = asyncio.create_task(forward(p, client))
    await client.streaming.wait()
    client.leave.set()
    await task  # the client left: the pump is stopped
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize("headers", [[(b"transfer-encoding", b"chunked")],
                                     [(b"content-length", b"11")]])
async def test_a_client_leaving_after_its_upload_ends_its_stream(
        headers: list[tuple[bytes, bytes]]) -> None:
    raw = Raw(chunks=(b"event",), end=asyncio.Event())
    p, _ = proxy(raw)
    client = Client({"type": "http.request", "body": b"0123456789", "more_body": True},
                    {"type": "http.request", "body": b"X"})
    task = asyncio.create_task(forward(p, client, scope=scope("POST", headers)))
    await client.streaming.wait()
    client.leave.set()
    async with asyncio.timeout(5):
        await task
    assert raw.closed and p.streams.open("auth") == 0


async def test_a_client_leaving_during_a_streamed_upload_stops_it() -> None:
    p, _ = proxy(Raw())
    client = _leaving({"type": "http.request", "body": b"01234", "more_body": True})
    with pytest.raises(ClientGoneError):
        await forward(p, client, scope=scope("POST", [(b"content-length", b"11")]))


@pytest.mark.parametrize("headers", [[(b"transfer-encoding", b"chunked")],
                                     [(b"content-length", b"11")]])
async def test_a_message_without_a_body_adds_nothing(headers: list[tuple[bytes, bytes]]) -> None:
    p, transport = proxy(Raw())
    await forward(p, Client({"type": "http.request", "more_body": True},
                            {"type": "http.request", "body": b"0123456789X"}),
                  scope=scope("POST", headers))
    assert transport.sent[0].body == b"0123456789X"


async def test_refusals_name_their_reason() -> None:
    p, _ = proxy(Raw())
    cases = [([(b"content-length", b"1x")], 400, "bad_content_length",
              "Content-Length must be a whole number"),
             ([(b"content-length", b"9" * 18)], 413, "body_too_large",
              "The request body is larger than the limit of 100 bytes"),
             ([(b"transfer-encoding", b"chunked")], 413, "body_too_large",
              "The request body is larger than the limit of 100 bytes")]
    for headers, status, code, message in cases:
        with pytest.raises(GatewayError) as refused:
            await forward(p, Client({"type": "http.request", "body": b"x" * 101}),
                          scope=scope("POST", headers))
        assert (refused.value.status, refused.value.code, refused.value.message) == (
            status, code, message)


async def test_connection_names_without_spaces_are_dropped() -> None:
    p, transport = proxy(Raw(headers=length(2)))
    await forward(p, Client(), scope=scope("GET", [(b"connection", b"x-a,x-b"),
                                                   (b"x-a", b"1"), (b"x-b", b"2"),
                                                   (b"x-c", b"3")]))
    assert [h for h in transport.sent[0].headers if h[0].startswith("x-")] == [("x-c", "3")]


async def test_an_upstream_504_stays_a_504() -> None:
    p, _ = proxy(Raw(504, length(0), chunks=()))
    with pytest.raises(GatewayError) as refused:
        await forward(p, Client())
    assert (refused.value.status, refused.value.code) == (504, "upstream_timeout")


async def test_an_answer_that_comes_before_the_upload_is_read_leaves_the_client_alone() -> None:
    """The upstream answers without reading the body (an early error, say): the client's
    `receive` still belongs to the upload, so the disconnect is not watched meanwhile."""
    gate = asyncio.Event()
    p, transport = proxy(Raw(chunks=(b"no",), end=gate))
    transport.reads_body = False
    client = Client({"type": "http.request", "body": b"01234", "more_body": True},
                    {"type": "http.request", "body": b"56789X"})
    task = asyncio.create_task(forward(p, client, scope=scope("POST",
                                                              [(b"content-length", b"11")])))
    await client.streaming.wait()
    gate.set()
    await task
    assert client.finished and len(client.body) == 2  # nothing read behind the upload's back
