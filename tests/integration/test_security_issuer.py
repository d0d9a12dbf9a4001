"""Verification against a real issuer process (tests/integration/procs/jwt_issuer.py) over
HTTP: key rotation picked up without a restart, a flood of unknown kids, the JWKS away or
stalled, and a service's own tokens by client credentials."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from core.bases import install_exception_handlers
from core.security import (
    ClientCredentials,
    CurrentPrincipal,
    JwksClient,
    Security,
    ServiceTokenError,
    TokenRejectedError,
    TokenVerifier,
    install_security,
)
from core.security.keys import SigningKey
from devinfra.process import free_port
from tests.helpers import eventually
from tests.helpers.clock import Clock
from tests.helpers.issuer import CLIENT_ID, CLIENT_SECRET, IssuerProc
from tests.security_support import AUDIENCE, ISSUER, claims


@pytest.fixture
async def issuer(spawn: Callable[..., Any], tmp_path: Path) -> IssuerProc:
    """Each test's own issuer (not the session's): these tests kill it, rotate its keys and
    count its JWKS fetches."""
    proc = IssuerProc(f"http://127.0.0.1:{free_port()}", tmp_path / "keys", spawn)
    await proc.start()
    return proc


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def jwks(issuer: IssuerProc, clock: Clock) -> AsyncIterator[JwksClient]:
    client = JwksClient(issuer.jwks_url, refresh_interval=3600, min_refresh_interval=1.0,
                        timeout=5, clock=clock)
    yield client
    await client.stop()


def verifier_of(jwks: JwksClient) -> TokenVerifier:
    return TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)


async def test_a_rotation_at_the_issuer_is_picked_up_without_a_restart(
        issuer: IssuerProc, jwks: JwksClient, clock: Clock) -> None:
    verifier = verifier_of(jwks)
    before = await issuer.issue("before")
    assert (await verifier.verify(before)).subject == "before"
    for alg in ("ES256", "RS256", "EdDSA"):
        clock.advance(1.0)  # the verifier's min_refresh_interval
        new_kid = (await issuer.call("POST", "/rotate", params={"alg": alg}))["kid"]
        token = await issuer.issue(alg)
        assert jwt.get_unverified_header(token) == {"alg": alg, "kid": new_kid, "typ": "at+jwt"}
        assert (await verifier.verify(token)).subject == alg
    assert (await verifier.verify(before)).subject == "before", "old keys still verify"
    assert await issuer.jwks_fetches() == 4


async def test_the_background_refresh_brings_new_keys_before_any_token(
        issuer: IssuerProc) -> None:
    jwks = JwksClient(issuer.jwks_url, refresh_interval=0.2, min_refresh_interval=3600)
    await jwks.start()
    try:
        new_kid = (await issuer.call("POST", "/rotate"))["kid"]
        await eventually(lambda: new_kid in jwks.keys, timeout=30)
        token = await issuer.issue()
        assert (await verifier_of(jwks).verify(token)).subject == "user-1"
    finally:
        await jwks.stop()


async def test_a_flood_of_unknown_kids_costs_the_issuer_one_fetch_per_interval(
        issuer: IssuerProc, jwks: JwksClient, clock: Clock) -> None:
    verifier = verifier_of(jwks)
    await verifier.verify(await issuer.issue())
    assert await issuer.jwks_fetches() == 1
    clock.advance(1.0)  # past min_refresh_interval: a miss may fetch again
    intruder = SigningKey.generate("EdDSA", now=time.time())
    forged = [jwt.encode(claims(), intruder.private_key, algorithm="EdDSA",
                         headers={"kid": secrets.token_hex(8)}) for _ in range(500)]
    started = time.monotonic()
    for _ in range(2):
        outcomes = await asyncio.gather(*(verifier.verify(t) for t in forged),
                                        return_exceptions=True)
        assert all(isinstance(o, TokenRejectedError) and o.rule == "unknown_kid"
                   for o in outcomes), outcomes[:3]
    elapsed = time.monotonic() - started
    fetched = await issuer.jwks_fetches() - 1
    assert 1 <= fetched <= 1 + int(elapsed / jwks.min_refresh_interval), (fetched, elapsed)


async def test_with_the_issuer_away_cached_keys_keep_working(
        issuer: IssuerProc, jwks: JwksClient, clock: Clock) -> None:
    verifier = verifier_of(jwks)
    token = await issuer.issue()
    await verifier.verify(token)
    issuer.kill()
    clock.advance(1.0)
    assert (await verifier.verify(token)).subject == "user-1"
    with pytest.raises(TokenRejectedError) as refused:  # a refresh is tried, fails, keys are kept
        await verifier.verify(jwt.encode(claims(), SigningKey.generate(
            "EdDSA", now=0).private_key, algorithm="EdDSA", headers={"kid": "unknown"}))
    assert refused.value.rule == "unknown_kid"
    assert jwks.fetches == 2
    assert (await verifier.verify(token)).subject == "user-1"


async def app_client(jwks: JwksClient) -> httpx.AsyncClient:
    app = FastAPI()
    install_exception_handlers(app)
    install_security(app, Security(verifier_of(jwks), jwks))

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"sub": principal.subject}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")


async def test_with_the_issuer_away_from_the_start_requests_get_503(
        issuer: IssuerProc) -> None:
    token = await issuer.issue()
    issuer.kill()
    jwks = JwksClient(issuer.jwks_url, timeout=2)
    await jwks.start()  # logs, does not raise: the service still starts
    async with await app_client(jwks) as http:
        response = await asyncio.wait_for(
            http.get("/me", headers={"authorization": f"Bearer {token}"}), timeout=30)
    await jwks.stop()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "keys_unavailable"


async def test_a_stalled_issuer_is_a_503_after_the_timeout_never_a_hang() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    jwks = JwksClient(f"http://127.0.0.1:{port}/jwks", timeout=1)
    key = SigningKey.generate("EdDSA", now=time.time())
    token = jwt.encode(claims(), key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
    try:
        async with await app_client(jwks) as http:
            started = time.monotonic()
            response = await asyncio.wait_for(
                http.get("/me", headers={"authorization": f"Bearer {token}"}), timeout=30)
            assert response.status_code == 503
            assert time.monotonic() - started < 25
            again = await http.get("/me", headers={"authorization": f"Bearer {token}"})
            assert again.status_code == 503, "within min_refresh_interval: fails fast"
        assert accepted, "the issuer was reached"
    finally:
        await jwks.stop()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


# --- service identity against the real token endpoint -------------------------------------


async def token_requests(issuer: IssuerProc) -> int:
    return int((await issuer.call("GET", "/stats"))["token"])


@pytest.mark.parametrize("auth", ["basic", "form"])
async def test_a_service_gets_caches_and_renews_its_token(
        issuer: IssuerProc, jwks: JwksClient, auth: Any) -> None:
    clock = Clock()
    tokens = ClientCredentials(f"{issuer.url}/oauth/token", CLIENT_ID, SecretStr(CLIENT_SECRET),
                               auth=auth, clock=clock)
    try:
        first = await tokens.token()
        principal = await verifier_of(jwks).verify(first)
        assert (principal.subject, principal.kind) == (CLIENT_ID, "service")
        assert principal.permissions == {"drivers:read"}
        assert await tokens.token() == first
        assert await token_requests(issuer) == 1
        clock.now += 80  # 80 % of TOKEN_TTL=100
        renewed = await asyncio.gather(*(tokens.token() for _ in range(50)))
        assert len(set(renewed)) == 1 and renewed[0] != first
        assert await token_requests(issuer) == 2, "50 callers, one renewal"
    finally:
        await tokens.aclose()


async def test_wrong_credentials_are_a_service_token_error(issuer: IssuerProc) -> None:
    tokens = ClientCredentials(f"{issuer.url}/oauth/token", CLIENT_ID, SecretStr("wrong"))
    with pytest.raises(ServiceTokenError, match="401: invalid_client: unknown client"):
        await tokens.token()
    await tokens.aclose()


async def test_the_auth_service_away_keeps_a_valid_token_then_fails_clearly(
        issuer: IssuerProc) -> None:
    clock = Clock()
    tokens = ClientCredentials(f"{issuer.url}/oauth/token", CLIENT_ID, SecretStr(CLIENT_SECRET),
                               clock=clock, timeout=2)
    first = await tokens.token()
    issuer.kill()
    clock.now += 90
    assert await tokens.token() == first, "renewal failed, the old token is still valid"
    clock.now += 10
    with pytest.raises(ServiceTokenError, match="unreachable"):
        await tokens.token()
    await tokens.aclose()


async def test_a_restarted_issuer_keeps_its_keys(issuer: IssuerProc, jwks: JwksClient) -> None:
    token = await issuer.issue()
    issuer.kill()
    await issuer.start()
    fresh = JwksClient(issuer.jwks_url)
    try:
        assert (await verifier_of(fresh).verify(token)).subject == "user-1"
    finally:
        await fresh.stop()
