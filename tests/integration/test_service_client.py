"""The service client against real upstream processes (uvicorn) over real HTTP: breakers,
bulkheads, retries and their budget, timeouts, cancellation; and service A (its own process)
calling service B, for the ids, the identity and the 502/503/504 mapping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core import correlation
from core.http import (
    ClientConfig,
    ServiceClient,
    UpstreamBadResponseError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from core.http.context import RequestContext, bound
from core.http.h1_transport import H1Transport
from core.resilience import BreakerConfig, RetryPolicy, State
from devinfra.process import free_port
from tests.helpers import eventually
from tests.http_support import FixedRegistry, Proc, RawServer, garbage_server, start

NO_BREAKER = BreakerConfig(min_calls=10_000)
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
async def upstreams() -> AsyncIterator[list[Proc]]:
    procs = await asyncio.gather(start("tests.integration.procs.upstream", "b1"),
                                 start("tests.integration.procs.upstream", "b2"))
    yield list(procs)
    for proc in procs:
        proc.stop()


@pytest.fixture
async def b1(upstreams: list[Proc]) -> Proc:
    return upstreams[0]


@pytest.fixture
async def b2(upstreams: list[Proc]) -> Proc:
    return upstreams[1]


@pytest.fixture(autouse=True)
async def _fresh_upstreams(upstreams: list[Proc]) -> None:
    async with httpx.AsyncClient() as http:
        for proc in upstreams:
            await http.post(proc.url + "/_reset")


async def set_mode(proc: Proc, **mode: Any) -> None:
    async with httpx.AsyncClient() as http:
        (await http.post(proc.url + "/_mode", json=mode)).raise_for_status()


async def count(proc: Proc, what: str = "GET") -> int:
    async with httpx.AsyncClient() as http:
        return int((await http.get(proc.url + "/_count")).json().get(what, 0))


async def reached(proc: Proc) -> bool:
    return await count(proc) > 0


def client_for(services: dict[str, list[str]], **config: Any) -> ServiceClient:
    settings: dict[str, Any] = {"timeout": 2.0, "deadline": 5.0, "retry": FAST_RETRY,
                                "breaker": NO_BREAKER, **config}
    return ServiceClient(FixedRegistry(services), config=ClientConfig(**settings))


# --- circuit breaker ------------------------------------------------------------------------


async def test_a_failing_upstream_opens_the_breaker_and_a_probe_closes_it(b1: Proc) -> None:
    breaker = BreakerConfig(min_calls=4, failure_rate=0.5, open_for=2.0)
    async with client_for({"b": [b1.url]}, breaker=breaker,
                           retry=RetryPolicy(max_attempts=1)) as client:
        await set_mode(b1, status=503)
        for _ in range(4):
            with pytest.raises(UpstreamBadResponseError):
                await client.get("b", "/work")
        assert await count(b1) == 4
        instance = (await client._registry.discover("b"))[0]
        assert client.breaker(instance).state is State.OPEN

        for _ in range(20):  # fail fast: none of these reaches the upstream
            with pytest.raises(UpstreamUnavailableError) as refused:
                await client.get("b", "/work")
        assert refused.value.headers["Retry-After"] in {"1", "2"}
        assert await count(b1) == 4

        await set_mode(b1, status=200)
        await eventually(lambda: client.breaker(instance).state is State.HALF_OPEN, timeout=10)
        response = await client.get("b", "/work")
        assert response.status_code == 200
        assert client.breaker(instance).state is State.CLOSED
        assert await count(b1) == 5


async def test_slow_calls_open_the_breaker_and_half_open_lets_only_n_probes(b1: Proc) -> None:
    breaker = BreakerConfig(min_calls=3, slow_call_rate=0.5, slow_call_duration=0.2,
                            open_for=0.5, half_open_probes=2)
    async with client_for({"b": [b1.url]}, breaker=breaker,
                          retry=RetryPolicy(max_attempts=1)) as client:
        instance = (await client._registry.discover("b"))[0]
        await set_mode(b1, delay=0.3)
        for _ in range(3):
            assert (await client.get("b", "/work")).status_code == 200  # slow, yet answered
        assert client.breaker(instance).state is State.OPEN

        await eventually(lambda: client.breaker(instance).state is State.HALF_OPEN, timeout=10)
        results = await asyncio.gather(*(client.get("b", "/work") for _ in range(6)),
                                       return_exceptions=True)
        refused = [r for r in results if isinstance(r, UpstreamUnavailableError)]
        assert len(refused) == 4
        assert await count(b1) == 3 + 2
        assert client.breaker(instance).state is State.OPEN  # the probes were slow too


# --- bulkhead -------------------------------------------------------------------------------


async def test_a_bulkhead_at_its_limit_refuses_at_once_instead_of_queuing(b1: Proc) -> None:
    async with client_for({"b": [b1.url]}, max_in_flight=2, max_waiting=1, max_wait=30.0,
                          timeout=10.0, deadline=20.0) as client:
        await set_mode(b1, delay=2.0)
        in_flight = [asyncio.create_task(client.get("b", "/work")) for _ in range(2)]
        await eventually(lambda: reached(b1), timeout=10)
        waiting = asyncio.create_task(client.get("b", "/work"))  # the one allowed to wait
        await eventually(lambda: client._bulkheads.get("b").waiting == 1, timeout=10)
        with pytest.raises(UpstreamUnavailableError) as refused:
            await client.get("b", "/work")
        assert not any(task.done() for task in in_flight)  # refused before they finished
        assert refused.value.code == "upstream_unavailable"
        await set_mode(b1, delay=0)  # the waiting call need not sit out another 2 s
        for response in await asyncio.gather(*in_flight, waiting):
            assert response.status_code == 200
        assert await count(b1) == 3


async def test_the_wait_for_a_slot_comes_out_of_the_deadline(b1: Proc) -> None:
    async with client_for({"b": [b1.url]}, max_in_flight=1, max_waiting=5, max_wait=30.0,
                          timeout=10.0, deadline=20.0) as client:
        await set_mode(b1, delay=2.0)
        holder = asyncio.create_task(client.get("b", "/work"))
        await eventually(lambda: reached(b1), timeout=10)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeoutError):
            await client.get("b", "/work", deadline=0.5)
        assert time.monotonic() - started < 1.5  # not the holder's 2 s plus its own 0.5 s
        assert (await holder).status_code == 200
        assert client._bulkheads.get("b").idle


# --- retries --------------------------------------------------------------------------------


async def test_post_is_never_retried_even_on_a_503(b1: Proc, b2: Proc) -> None:
    async with client_for({"b": [b1.url, b2.url]}) as client:
        await set_mode(b1, status=503)
        await set_mode(b2, status=503)
        with pytest.raises(UpstreamBadResponseError) as failed:
            await client.post("b", "/work", json={"order": 1})
        assert failed.value.status == 503
        assert await count(b1, "POST") + await count(b2, "POST") == 1
        with pytest.raises(UpstreamBadResponseError):
            await client.patch("b", "/work", json={"order": 1})
        assert await count(b1, "PATCH") + await count(b2, "PATCH") == 1


@pytest.mark.parametrize("transport", ["aiohttp", "h1"])
async def test_a_post_whose_connection_was_never_opened_is_sent_to_another_instance(
        b1: Proc, transport: str) -> None:
    """A refused connection carried nothing: the POST goes to the instance that is up."""
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = ClientConfig(retry=FAST_RETRY, breaker=NO_BREAKER, timeout=2.0, deadline=5.0)
    client = ServiceClient(FixedRegistry({"b": [down, b1.url]}), config=config,
                           transport=H1Transport() if transport == "h1" else None)
    async with client:
        for n in range(6):  # the instances take turns: `down` is picked first for some
            response = await client.post("b", "/work", json={"order": n})
            assert response.status_code == 200
        assert await count(b1, "POST") == 6


async def test_post_with_an_idempotency_key_is_retried(b1: Proc, b2: Proc) -> None:
    async with client_for({"b": [b1.url, b2.url]}) as client:
        await set_mode(b1, status=503)
        await set_mode(b2, status=503)
        with pytest.raises(UpstreamBadResponseError):
            await client.post("b", "/work", json={}, idempotency_key="order-1")
        assert await count(b1, "POST") + await count(b2, "POST") == 3


async def test_idempotent_calls_are_retried_on_another_instance(b1: Proc, b2: Proc) -> None:
    async with client_for({"b": [b1.url, b2.url]}) as client:
        await set_mode(b1, status=503)  # fails at once, so it is the least busy...
        await set_mode(b2, delay=0.2)  # ...but a retry must still go to the other one
        responses = await asyncio.gather(*(client.get("b", "/work") for _ in range(10)))
        assert {r.json()["instance"] for r in responses} == {"b2"}
        assert await count(b2) == 10  # never twice on b2 in one call
        assert 1 <= await count(b1) <= 10  # nor twice on b1
        for method in ("PUT", "DELETE"):
            response = await client.request(method, "b", "/work")
            assert response.json() == {"instance": "b2", "method": method}


async def test_the_retry_budget_stops_a_retry_storm(b1: Proc, b2: Proc) -> None:
    async with client_for({"b": [b1.url, b2.url]}, retry_ratio=0.2, min_retries=0) as client:
        await set_mode(b1, status=503)
        await set_mode(b2, status=503)
        for _ in range(50):
            with pytest.raises(UpstreamBadResponseError):
                await client.get("b", "/work")
        sent = await count(b1) + await count(b2)
        assert 50 < sent <= 50 + 10  # without the budget: 150


async def test_retry_after_is_honoured_within_the_deadline(b1: Proc) -> None:
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05)
    async with client_for({"b": [b1.url]}, deadline=3.0, retry=retry) as client:
        await set_mode(b1, status=503, retry_after=30)
        with pytest.raises(UpstreamBadResponseError):
            await client.get("b", "/work")
        assert await count(b1) == 1  # waiting 30 s would pass the deadline: no retry

        await set_mode(b1, status=503, retry_after=1)
        started = time.monotonic()
        with pytest.raises(UpstreamBadResponseError):
            await client.get("b", "/work")
        assert time.monotonic() - started >= 0.9  # waited as asked, not the 50 ms backoff
        assert await count(b1) == 1 + 2


async def test_a_timeout_is_retried_then_reported(b1: Proc) -> None:
    async with client_for({"b": [b1.url]}, timeout=0.2, deadline=5.0) as client:
        await set_mode(b1, delay=2.0)
        with pytest.raises(UpstreamTimeoutError) as expired:
            await client.get("b", "/work")
        assert "0.2" in str(expired.value) and "GET b/work" in str(expired.value)
        assert await count(b1) == 3


# --- cancellation ---------------------------------------------------------------------------


async def test_a_caller_cancelled_mid_call_leaks_no_slot_and_no_probe(b1: Proc) -> None:
    breaker = BreakerConfig(min_calls=2, open_for=0.3, half_open_probes=1)
    async with client_for({"b": [b1.url]}, breaker=breaker, max_in_flight=1, max_waiting=0,
                          retry=RetryPolicy(max_attempts=1)) as client:
        instance = (await client._registry.discover("b"))[0]
        bulkhead = client._bulkheads.get("b")
        await set_mode(b1, status=503)
        for _ in range(2):
            with pytest.raises(UpstreamBadResponseError):
                await client.get("b", "/work")
        await eventually(lambda: client.breaker(instance).state is State.HALF_OPEN, timeout=10)

        await set_mode(b1, status=200, delay=30)
        probe = asyncio.create_task(client.get("b", "/work"))
        await eventually(lambda: reached(b1), timeout=10)  # the probe reached the upstream
        assert bulkhead.in_use == 1 and not client.breaker(instance).allows()
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert bulkhead.in_use == 0
        assert client.breaker(instance).allows()  # the probe slot is free again
        assert len(client._balancer) == 0

        await set_mode(b1, delay=0)
        assert (await client.get("b", "/work")).status_code == 200
        assert client.breaker(instance).state is State.CLOSED


# --- streaming, 4xx, pools ------------------------------------------------------------------


async def test_4xx_is_a_response_unless_asked_and_bodies_stream(b1: Proc) -> None:
    async with client_for({"b": [b1.url]}) as client:
        missing = await client.get("b", "/missing")
        assert missing.status_code == 404 and missing.json() == {"error": "no such thing"}
        assert await count(b1, "GET") == 0  # /missing is not /work; and no retry of a 4xx
        with pytest.raises(UpstreamBadResponseError) as rejected:
            await client.get("b", "/missing", raise_for_status=True)
        assert rejected.value.status == 404 and rejected.value.code == "upstream_rejected"

        async with client.stream("GET", "b", "/stream") as response:
            chunks = [chunk async for chunk in response.aiter_bytes()]
            assert client._bulkheads.get("b").in_use == 1  # held while the body streams
        assert b"".join(chunks) == b"chunk-0;chunk-1;chunk-2;"
        assert client._bulkheads.get("b").in_use == 0

        with pytest.raises(UpstreamBadResponseError, match="not JSON"):
            (await client.get("b", "/not-json")).json()


async def test_an_early_refusal_of_an_upload_is_an_answer_not_a_broken_upstream() -> None:
    """An upstream that answers 413 after the first chunk of a streamed upload and closes
    (RFC 9112 §9.5) is healthy: the caller gets the 413, and the breaker counts no failure
    (it used to be a 502 that opened the breaker of a healthy instance)."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b"first\r\n")
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n"
                     b"Connection: close\r\n\r\ntoo big!")
        await writer.drain()

    async def upload() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.Event().wait()  # the rest never comes: the client must not wait for it

    async with RawServer(refuse) as server:
        config = ClientConfig(breaker=BreakerConfig(min_calls=1), timeout=5.0, deadline=5.0)
        async with ServiceClient(FixedRegistry({"b": [server.url]}), config=config,
                                 transport=H1Transport()) as client:
            response = await client.post("b", "/upload", content=upload())
            assert response.status_code == 413 and response.content == b"too big!"
            instance = (await client._registry.discover("b"))[0]
            assert client.breaker(instance).state is State.CLOSED


# --- service A calling service B ------------------------------------------------------------


@pytest.fixture(scope="module")
async def service_a(upstreams: list[Proc]) -> AsyncIterator[Proc]:
    server, garbage_url = await garbage_server()
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = (f"b={upstreams[0].url};down={refused};garbage={garbage_url};nobody=")
    proc = await start("tests.integration.procs.caller_app", env={"UPSTREAMS": spec})
    yield proc
    proc.stop()
    server.close()


async def test_ids_and_the_callers_token_travel_from_a_to_b(service_a: Proc) -> None:
    async with httpx.AsyncClient(base_url=service_a.url) as http:
        answer = await http.get("/relay/b/echo", headers={
            "X-Request-ID": "req-123", "X-Correlation-ID": "corr-9",
            "Authorization": "Bearer user-token"})
        assert answer.status_code == 200
        assert answer.json()["headers"] == {
            "x-request-id": "req-123", "x-correlation-id": "corr-9",
            "authorization": "Bearer user-token", "idempotency-key": None}
        assert answer.headers["X-Request-ID"] == "req-123"
        assert answer.headers["X-Correlation-ID"] == "corr-9"

        made = await http.get("/relay/b/echo")  # no ids, no token: A makes the ids
        received = made.json()["headers"]
        assert received["authorization"] is None
        assert received["x-request-id"] == made.headers["X-Request-ID"]
        assert received["x-correlation-id"] == made.headers["X-Correlation-ID"]
        assert len(received["x-request-id"]) == 32

        unsafe = await http.get("/relay/b/echo", headers={
            "X-Request-ID": "evil\tid<script>", "X-Correlation-ID": "x" * 129})
        received = unsafe.json()["headers"]
        assert received["x-request-id"] != "evil\tid<script>"
        assert received["x-correlation-id"] == received["x-request-id"]  # defaults to it
        assert unsafe.headers["X-Request-ID"] == received["x-request-id"]


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/relay/b/work?mode=slow", 504, "upstream_timeout"),
    ("/relay/down/anything", 503, "upstream_unavailable"),
    ("/relay/nobody/anything", 503, "upstream_unavailable"),
    ("/relay/unknown/anything", 503, "upstream_unavailable"),
    ("/relay/garbage/anything", 502, "upstream_error"),
    ("/relay/b/work", 502, "upstream_error"),
    ("/relay/b/not-json", 502, "upstream_error"),
])
async def test_upstream_failures_map_to_502_503_504(
        service_a: Proc, b1: Proc, path: str, status: int, code: str) -> None:
    if path.endswith("slow"):
        await set_mode(b1, delay=5.0)
    elif path == "/relay/b/work":
        await set_mode(b1, status=500)
    async with httpx.AsyncClient(base_url=service_a.url, timeout=30) as http:
        answer = await http.get(path)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code
    service = path.split("/")[2]
    assert error["message"].startswith(f"Service '{service}' ")
    assert "127.0.0.1" not in answer.text and "Error" not in error["message"]
    assert answer.headers["X-Request-ID"]


async def test_a_4xx_from_b_reaches_a_as_a_response(service_a: Proc) -> None:
    async with httpx.AsyncClient(base_url=service_a.url) as http:
        answer = await http.get("/relay/b/missing")
    assert answer.status_code == 404
    assert answer.json() == {"error": "no such thing"}


async def test_a_client_outside_a_request_makes_its_own_ids(b1: Proc) -> None:
    async with client_for({"b": [b1.url]}) as client:
        first = (await client.get("b", "/echo")).json()["headers"]
        second = (await client.get("b", "/echo")).json()["headers"]
        assert first["x-request-id"] != second["x-request-id"]
        assert first["x-correlation-id"] == first["x-request-id"]
        with bound(RequestContext("job-1", "Bearer svc")), correlation.bound("corr-1"):
            bound_ids = (await client.get("b", "/echo")).json()["headers"]
        assert (bound_ids["x-request-id"], bound_ids["x-correlation-id"]) == ("job-1", "corr-1")
        assert bound_ids["authorization"] is None  # NoAuth: the context's token stays put


async def test_a_small_streamed_answer_cut_short_is_retried_when_read_within_the_attempt(
        b1: Proc) -> None:
    """`stream(read_up_to=n)`: a body declared at most n bytes is read inside the attempt, so
    an upstream that breaks off mid-body is a failed attempt (retried, counted by its breaker)
    instead of an error half-way through the caller's own answer."""
    server, cut_url = await garbage_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-ten-b")
    try:
        async with client_for({"b": [cut_url, b1.url]}, breaker=BreakerConfig(
                min_calls=1, failure_rate=1.0, open_for=60)) as client:

            async def call() -> bytes:
                async with client.stream("GET", "b", "/echo", read_up_to=1000) as response:
                    assert response.status_code == 200
                    return b"".join([c async for c in response.aiter_bytes()])

            # concurrent, so the least-outstanding balancer sends some to each instance
            bodies = await asyncio.gather(*(call() for _ in range(4)))
            assert all(body.startswith(b"{") for body in bodies)
            cut = next(i for i in await client._registry.discover("b") if i.url == cut_url)
            assert client.breaker(cut).state is State.OPEN

        async with client_for({"b": [cut_url]}) as client:
            with pytest.raises(UpstreamBadResponseError):
                async with client.stream("GET", "b", "/echo", read_up_to=1000):
                    pytest.fail("a cut body must not be handed over as an answer")
            async with client.stream("GET", "b", "/echo") as response:  # not read ahead
                assert response.status_code == 200
                with pytest.raises(UpstreamBadResponseError):
                    await response.aread()
    finally:
        server.close()
