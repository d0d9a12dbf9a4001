"""ClientCredentials against an in-process token endpoint and a hand-moved clock: fetch,
cache, renewal at 80 %, shared fetches, failures with and without a valid token."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import SecretStr

from core.config import Settings
from core.security import ClientCredentials, ServiceTokenError, client_credentials_from_settings
from core.security.errors import SecurityError
from core.security.service_identity import EXPIRY_MARGIN


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TokenEndpoint:
    def __init__(self, lifetime: float = 100) -> None:
        self.lifetime = lifetime
        self.requests: list[httpx.Request] = []
        self.answer: httpx.Response | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.answer is not None:
            return self.answer
        return httpx.Response(200, json={"access_token": f"t{len(self.requests)}",
                                         "token_type": "Bearer", "expires_in": self.lifetime})

    def form(self, index: int = -1) -> dict[str, list[str]]:
        return parse_qs(self.requests[index].content.decode())


def provider(endpoint: TokenEndpoint, clock: Clock, **options: Any) -> ClientCredentials:
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    return ClientCredentials("http://auth/oauth/token", "driver", SecretStr("s3cret"),
                             http=http, clock=clock, **options)


async def test_a_token_is_fetched_once_and_cached_until_80_percent() -> None:
    endpoint, clock = TokenEndpoint(lifetime=100), Clock()
    tokens = provider(endpoint, clock)
    assert await tokens.token() == "t1"
    clock.now += 79.9
    assert await tokens() == "t1"
    assert len(endpoint.requests) == 1
    clock.now += 0.1
    assert await tokens.token() == "t2"
    assert len(endpoint.requests) == 2 == tokens.fetches


async def test_the_renewal_point_is_configurable() -> None:
    endpoint, clock = TokenEndpoint(lifetime=100), Clock()
    tokens = provider(endpoint, clock, renew_at=0.5)
    await tokens.token()
    clock.now += 49.9
    assert await tokens.token() == "t1"
    clock.now += 0.1
    assert await tokens.token() == "t2"


async def test_basic_auth_by_default_form_on_request() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    await provider(endpoint, clock, scope="drivers", audience="platform").token()
    request = endpoint.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "http://auth/oauth/token"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        b"driver:s3cret").decode()
    assert endpoint.form() == {"grant_type": ["client_credentials"], "scope": ["drivers"],
                               "audience": ["platform"]}
    await provider(endpoint, clock, auth="form").token()
    assert "authorization" not in endpoint.requests[1].headers
    assert endpoint.form() == {"grant_type": ["client_credentials"], "client_id": ["driver"],
                               "client_secret": ["s3cret"]}


async def test_concurrent_callers_share_one_fetch() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    endpoint.gate = asyncio.Event()
    tokens = provider(endpoint, clock)
    callers = [asyncio.create_task(tokens.token()) for _ in range(50)]
    await asyncio.sleep(0.01)
    endpoint.gate.set()
    assert set(await asyncio.gather(*callers)) == {"t1"}
    assert len(endpoint.requests) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    endpoint.gate = asyncio.Event()
    tokens = provider(endpoint, clock)
    first = asyncio.create_task(tokens.token())
    second = asyncio.create_task(tokens.token())
    await asyncio.sleep(0.01)
    first.cancel()
    endpoint.gate.set()
    assert await second == "t1"


async def test_a_failed_renewal_keeps_the_valid_token(caplog: pytest.LogCaptureFixture) -> None:
    endpoint, clock = TokenEndpoint(lifetime=100), Clock()
    tokens = provider(endpoint, clock, retry_after=1)
    await tokens.token()
    endpoint.answer = httpx.Response(503)
    clock.now += 80
    with caplog.at_level(logging.WARNING, "core.security.service_identity"):
        assert await tokens.token() == "t1"
    assert "answered 503" in caplog.text
    assert len(endpoint.requests) == 2
    clock.now += 0.5
    assert await tokens.token() == "t1"
    assert len(endpoint.requests) == 2, "no new attempt within retry_after"
    clock.now += 0.5
    assert await tokens.token() == "t1"
    assert len(endpoint.requests) == 3
    endpoint.answer = None
    clock.now += 1
    assert await tokens.token() == "t4"


async def test_no_valid_token_and_a_failure_raises() -> None:
    endpoint, clock = TokenEndpoint(lifetime=100), Clock()
    tokens = provider(endpoint, clock)
    await tokens.token()
    endpoint.answer = httpx.Response(401, json={"error": "invalid_client",
                                                "error_description": "bad secret"})
    clock.now += 100 - EXPIRY_MARGIN
    with pytest.raises(ServiceTokenError, match="401: invalid_client: bad secret"):
        await tokens.token()
    with pytest.raises(ServiceTokenError):
        await tokens.token()


async def test_a_token_just_before_expiry_is_not_handed_out() -> None:
    endpoint, clock = TokenEndpoint(lifetime=100), Clock()
    tokens = provider(endpoint, clock)
    await tokens.token()
    endpoint.answer = httpx.Response(500)
    clock.now += 100 - EXPIRY_MARGIN - 0.01
    assert await tokens.token() == "t1"
    clock.now += 0.01
    with pytest.raises(ServiceTokenError):
        await tokens.token()


async def test_the_first_fetch_failing_raises() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    tokens = ClientCredentials("http://auth/token", "c", SecretStr("s"), http=http)
    with pytest.raises(ServiceTokenError, match="unreachable: ConnectError"):
        await tokens.token()


@pytest.mark.parametrize(("response", "message"), [
    (httpx.Response(200, content=b"<html>"), "not JSON"),
    (httpx.Response(200, json=["x"]), "not a JSON object"),
    (httpx.Response(200, json={"token_type": "Bearer", "expires_in": 5}), "no access_token"),
    (httpx.Response(200, json={"access_token": "", "token_type": "Bearer", "expires_in": 5}),
     "no access_token"),
    (httpx.Response(200, json={"access_token": "t", "token_type": "mac", "expires_in": 5}),
     "not a bearer"),
    (httpx.Response(200, json={"access_token": "t", "expires_in": 5}), "not a bearer"),
    (httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"}), "expires_in"),
    (httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                               "expires_in": 0}), "expires_in"),
    (httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                               "expires_in": True}), "expires_in"),
    (httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                               "expires_in": "60"}), "expires_in"),
    (httpx.Response(400, content=b"oops"), "400: no OAuth error body"),
    (httpx.Response(400, json=["x"]), "400: no OAuth error body"),
    (httpx.Response(400, json={"error": "invalid_grant"}), "400: invalid_grant$"),
])
async def test_a_bad_token_response_is_refused(response: httpx.Response, message: str) -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    endpoint.answer = response
    with pytest.raises(ServiceTokenError, match=message):
        await provider(endpoint, clock).token()


async def test_the_token_type_is_case_insensitive_and_lifetimes_may_be_floats() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    endpoint.answer = httpx.Response(200, json={"access_token": "t", "token_type": "bearer",
                                                "expires_in": 10.5})
    assert await provider(endpoint, clock).token() == "t"


async def test_invalidate_forgets_the_token() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    tokens = provider(endpoint, clock)
    await tokens.token()
    tokens.invalidate()
    assert await tokens.token() == "t2"


async def test_the_lifetime_counts_from_the_request() -> None:
    endpoint, clock = TokenEndpoint(lifetime=100), Clock()

    async def slow(request: httpx.Request) -> httpx.Response:
        clock.now += 30  # the answer took 30 s
        return await endpoint(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(slow))
    tokens = ClientCredentials("http://auth/token", "c", SecretStr("s"), http=http, clock=clock)
    await tokens.token()
    clock.now += 49.9  # 79.9 s after the request was sent
    assert await tokens.token() == "t1"
    clock.now += 0.1
    assert await tokens.token() == "t2"


@pytest.mark.parametrize(("options", "secret"), [
    ({"renew_at": 0}, "s"), ({"renew_at": 1}, "s"), ({}, ""),
])
def test_bad_options_are_refused(options: dict[str, Any], secret: str) -> None:
    with pytest.raises(SecurityError):
        ClientCredentials("http://x", "c", SecretStr(secret), **options)


def test_an_empty_client_id_is_refused() -> None:
    with pytest.raises(SecurityError):
        ClientCredentials("http://x", "", SecretStr("s"))


async def test_built_from_settings() -> None:
    settings = Settings(auth_token_url="http://auth/token", service_client_id="driver",
                        service_client_secret=SecretStr("s"))
    tokens = client_credentials_from_settings(settings)
    assert (tokens.token_url, tokens.client_id, tokens.auth) == (
        "http://auth/token", "driver", "basic")
    await tokens.aclose()
    assert tokens._http.is_closed
    with pytest.raises(SecurityError, match="AUTH_TOKEN_URL"):
        client_credentials_from_settings(Settings(service_client_id="driver"))


async def test_aclose_leaves_a_client_handed_in_open() -> None:
    http = httpx.AsyncClient()
    tokens = ClientCredentials("http://x", "c", SecretStr("s"), http=http)
    await tokens.aclose()
    assert not http.is_closed
    await http.aclose()


async def test_the_request_carries_the_timeout_and_asks_for_json() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    await provider(endpoint, clock, timeout=2.5).token()
    request = endpoint.requests[0]
    assert request.headers["accept"] == "application/json"
    assert request.extensions["timeout"] == {"connect": 2.5, "read": 2.5, "write": 2.5,
                                             "pool": 2.5}
    await provider(endpoint, clock).token()
    assert endpoint.requests[1].extensions["timeout"]["read"] == 5.0


async def test_defaults_renewal_retry_and_margin() -> None:
    endpoint, clock = TokenEndpoint(lifetime=100), Clock()
    tokens = provider(endpoint, clock)
    assert (tokens.renew_at, tokens.retry_after, tokens.auth, EXPIRY_MARGIN) == (
        0.8, 1.0, "basic", 5.0)
    await tokens.token()
    endpoint.answer = httpx.Response(503)
    clock.now += 80
    assert await tokens.token() == "t1"
    clock.now += 0.99
    assert await tokens.token() == "t1"
    assert len(endpoint.requests) == 2
    clock.now += 0.01
    assert await tokens.token() == "t1"
    assert len(endpoint.requests) == 3


async def test_a_success_clears_the_failure() -> None:
    endpoint, clock = TokenEndpoint(lifetime=100), Clock()
    tokens = provider(endpoint, clock, retry_after=10)
    await tokens.token()
    endpoint.answer = httpx.Response(503)
    clock.now += 80
    assert await tokens.token() == "t1"
    endpoint.answer = None
    tokens.invalidate()
    assert await tokens.token() == "t3"
    endpoint.answer = httpx.Response(503)
    clock.now += 80
    assert await tokens.token() == "t3"
    assert len(endpoint.requests) == 4, "the earlier failure no longer holds renewal back"


async def test_a_recent_failure_without_a_valid_token_tries_again() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    endpoint.answer = httpx.Response(503)
    tokens = provider(endpoint, clock, retry_after=60)
    for _ in range(2):
        with pytest.raises(ServiceTokenError):
            await tokens.token()
    assert len(endpoint.requests) == 2
    endpoint.answer = None
    assert await tokens.token() == "t3"


async def test_a_one_second_lifetime_is_accepted() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    endpoint.answer = httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                                                "expires_in": 1})
    assert await provider(endpoint, clock).token() == "t"


@pytest.mark.parametrize(("body", "message"), [
    ({"error_description": "no such client"}, "401: \\?: no such client$"),
    ({"error": "invalid_client", "error_description": ""}, "401: invalid_client$"),
])
async def test_oauth_errors_are_quoted(body: dict[str, Any], message: str) -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    endpoint.answer = httpx.Response(401, json=body)
    with pytest.raises(ServiceTokenError, match=message):
        await provider(endpoint, clock).token()


@pytest.mark.parametrize(("response", "message"), [
    (httpx.Response(200, content=b"<html>"), "^token endpoint answered not JSON$"),
    (httpx.Response(200, json=["x"]), "^token response is not a JSON object$"),
    (httpx.Response(200, json={"token_type": "Bearer", "expires_in": 5}),
     "^token response has no access_token$"),
    (httpx.Response(200, json={"access_token": "t", "token_type": 1, "expires_in": 5}),
     "^token response is not a bearer token$"),
    (httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"}),
     "^token response has no positive expires_in$"),
    (httpx.Response(500), "^token endpoint answered 500: no OAuth error body$"),
])
async def test_token_errors_say_exactly_what(response: httpx.Response, message: str) -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    endpoint.answer = response
    with pytest.raises(ServiceTokenError, match=message):
        await provider(endpoint, clock).token()


@pytest.mark.parametrize(("options", "message"), [
    ({"renew_at": 0.0}, r"^renew_at is a fraction of the lifetime, in \(0, 1\)$"),
    ({"client_id": ""}, "^client credentials need a client id and secret$"),
])
def test_option_errors_say_what(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"client_id": "c", **options}
    with pytest.raises(SecurityError, match=message):
        ClientCredentials("http://x", arguments.pop("client_id"), SecretStr("s"), **arguments)


def test_a_renewal_point_just_inside_the_bounds_is_accepted() -> None:
    assert ClientCredentials("http://x", "c", SecretStr("s"), renew_at=0.01).renew_at == 0.01
    assert ClientCredentials("http://x", "c", SecretStr("s"), renew_at=0.99).renew_at == 0.99


@pytest.mark.parametrize("missing", ["auth_token_url", "service_client_id",
                                     "service_client_secret"])
def test_settings_need_all_three(missing: str) -> None:
    values: dict[str, Any] = {"auth_token_url": "http://auth/token",
                              "service_client_id": "driver",
                              "service_client_secret": SecretStr("s"), missing: None}
    with pytest.raises(SecurityError, match=(
            r"^set AUTH_TOKEN_URL, SERVICE_CLIENT_ID and SERVICE_CLIENT_SECRET$")):
        client_credentials_from_settings(Settings(**values))


async def test_settings_with_a_client_handed_in() -> None:
    http = httpx.AsyncClient()
    settings = Settings(auth_token_url="http://auth/token", service_client_id="driver",
                        service_client_secret=SecretStr("s"))
    tokens = client_credentials_from_settings(settings, http=http)
    assert tokens._http is http
    assert tokens.client_secret.get_secret_value() == "s"
    await http.aclose()
