"""JwksClient against an in-process issuer (httpx.MockTransport) and a hand-moved clock:
first-use fetch, cache, rate-limited refresh on unknown kids, shared fetches, failures."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest

from core.security import JwksClient, KeysUnavailableError, LocalKeySource, StaticKeySource
from core.security.errors import SecurityError
from core.security.jwks import MAX_JWKS_BYTES, JwksError, parse_jwks
from core.security.keys import SigningKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """Serves a JWKS of `keys`; counts requests; can fail or stall on demand."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.requests = 0
        self.fail: int | None = None
        self.body: Any = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            return httpx.Response(self.fail)
        if self.body is not None:
            return httpx.Response(200, content=self.body)
        return httpx.Response(200, json={"keys": [k.public_jwk for k in self.keys]})


def key(alg: str = "EdDSA") -> SigningKey:
    return SigningKey.generate(alg, now=time.time())


def client(issuer: Issuer, clock: Clock, **options: Any) -> JwksClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(issuer))
    return JwksClient("http://issuer/jwks", http=http, clock=clock, **options)


async def test_keys_are_fetched_on_first_use_then_served_from_memory() -> None:
    k = key()
    issuer, clock = Issuer(k), Clock()
    jwks = client(issuer, clock)
    assert issuer.requests == 0
    found = await jwks.get(k.kid)
    assert found is not None and found.alg == "EdDSA" and found.kid == k.kid
    for _ in range(50):
        assert await jwks.get(k.kid) is found
    assert issuer.requests == 1 == jwks.fetches
    assert set(jwks.keys) == {k.kid}


async def test_an_unknown_kid_refreshes_at_most_once_per_min_interval() -> None:
    k = key()
    issuer, clock = Issuer(k), Clock()
    jwks = client(issuer, clock, min_refresh_interval=5)
    await jwks.get(k.kid)
    assert await jwks.get("nope-1") is None
    assert issuer.requests == 1, "the first fetch was just now"
    clock.now += 4.9
    assert await jwks.get("nope-2") is None
    assert issuer.requests == 1
    clock.now += 0.1
    assert await jwks.get("nope-3") is None
    assert issuer.requests == 2
    assert await jwks.get("nope-4") is None
    assert issuer.requests == 2


async def test_a_new_key_at_the_issuer_is_found_by_its_kid() -> None:
    old, new = key(), key("ES256")
    issuer, clock = Issuer(old), Clock()
    jwks = client(issuer, clock, min_refresh_interval=5)
    await jwks.get(old.kid)
    issuer.keys = [new, old]
    clock.now += 5
    found = await jwks.get(new.kid)
    assert found is not None and found.alg == "ES256"


async def test_concurrent_misses_share_one_fetch() -> None:
    k = key()
    issuer, clock = Issuer(k), Clock()
    issuer.gate = asyncio.Event()
    jwks = client(issuer, clock)
    waiting = [asyncio.create_task(jwks.get(f"random-{i}")) for i in range(200)]
    waiting.append(asyncio.create_task(jwks.get(k.kid)))
    await asyncio.sleep(0.01)
    issuer.gate.set()
    results = await asyncio.gather(*waiting)
    assert issuer.requests == 1
    assert results[:-1] == [None] * 200
    assert results[-1] is not None


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch() -> None:
    k = key()
    issuer, clock = Issuer(k), Clock()
    issuer.gate = asyncio.Event()
    jwks = client(issuer, clock)
    first = asyncio.create_task(jwks.get(k.kid))
    second = asyncio.create_task(jwks.get(k.kid))
    await asyncio.sleep(0.01)
    first.cancel()
    issuer.gate.set()
    assert await second is not None
    assert issuer.requests == 1


async def test_a_failed_fetch_keeps_the_last_good_keys(caplog: pytest.LogCaptureFixture) -> None:
    k = key()
    issuer, clock = Issuer(k), Clock()
    jwks = client(issuer, clock, min_refresh_interval=1)
    await jwks.get(k.kid)
    for failure in (500, 404):
        issuer.fail = failure
        clock.now += 1
        with caplog.at_level(logging.WARNING, "core.security.jwks"):
            assert await jwks.get("other") is None
        assert await jwks.get(k.kid) is not None
    assert "keeping the last good keys" in caplog.text
    issuer.fail, issuer.body = None, b"not json"
    clock.now += 1
    await jwks.refresh()
    assert await jwks.get(k.kid) is not None
    assert issuer.requests == 4


async def test_no_keys_ever_is_keys_unavailable_and_fails_fast(
        caplog: pytest.LogCaptureFixture) -> None:
    issuer, clock = Issuer(key()), Clock()
    issuer.fail = 503
    jwks = client(issuer, clock, min_refresh_interval=5)
    with (caplog.at_level(logging.WARNING, "core.security.jwks"),
          pytest.raises(KeysUnavailableError)):
        await jwks.get("any")
    assert "no keys yet" in caplog.text
    with pytest.raises(KeysUnavailableError):
        await jwks.get("any")
    assert issuer.requests == 1, "within the min interval: no second fetch"
    issuer.fail = None
    clock.now += 5
    assert await jwks.get("any") is None
    assert issuer.requests == 2


async def test_an_unreachable_issuer_is_keys_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    jwks = JwksClient("http://issuer/jwks", http=http)
    with pytest.raises(KeysUnavailableError):
        await jwks.get("kid")
    assert jwks.fetches == 1


async def test_a_jwks_that_is_too_large_is_refused() -> None:
    issuer, clock = Issuer(), Clock()
    issuer.body = b'{"keys": [], "pad": "' + b"x" * MAX_JWKS_BYTES + b'"}'
    jwks = client(issuer, clock)
    with pytest.raises(KeysUnavailableError):
        await jwks.get("kid")
    issuer.body = b'{"keys": []}'
    clock.now += 10
    assert await jwks.get("kid") is None


async def test_start_fetches_and_refreshes_in_the_background() -> None:
    first, second = key(), key()
    issuer = Issuer(first)
    http = httpx.AsyncClient(transport=httpx.MockTransport(issuer))
    jwks = JwksClient("http://issuer/jwks", http=http, refresh_interval=0.01)
    await jwks.start()
    await jwks.start()
    assert first.kid in jwks.keys
    issuer.keys = [second]
    for _ in range(500):
        if second.kid in jwks.keys:
            break
        await asyncio.sleep(0.01)
    assert set(jwks.keys) == {second.kid}, "a refresh replaces the set: retired keys go"
    await jwks.stop()
    count = issuer.requests
    await asyncio.sleep(0.05)
    assert issuer.requests == count
    assert not http.is_closed, "a client handed in is the caller's to close"
    await jwks.stop()


async def test_the_first_background_refresh_comes_one_interval_after_start() -> None:
    issuer = Issuer(key())
    http = httpx.AsyncClient(transport=httpx.MockTransport(issuer))
    jwks = JwksClient("http://issuer/jwks", http=http, refresh_interval=60)
    await jwks.start()  # fetched just now: a refresh at once would fetch the same keys again
    for _ in range(20):  # turns of the loop in which a refresh due now would have run
        await asyncio.sleep(0)
    assert (jwks.fetches, issuer.requests) == (1, 1)
    await jwks.stop()


async def test_start_with_the_issuer_away_does_not_raise() -> None:
    issuer = Issuer()
    issuer.fail = 500
    http = httpx.AsyncClient(transport=httpx.MockTransport(issuer))
    jwks = JwksClient("http://issuer/jwks", http=http, refresh_interval=60)
    await jwks.start()
    assert jwks.keys == {}
    await jwks.stop()


async def test_stop_closes_the_http_client_it_made() -> None:
    jwks = JwksClient("http://127.0.0.1:9/jwks")
    await jwks.stop()
    assert jwks._http.is_closed


@pytest.mark.parametrize("options", [{"refresh_interval": 0}, {"min_refresh_interval": -1},
                                     {"timeout": 0}])
def test_bad_intervals_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(SecurityError):
        JwksClient("http://x", **options)


def test_parse_jwks_keeps_usable_signing_keys_only() -> None:
    ed, es, rs = key(), key("ES256"), key("RS256")
    no_alg = {k: v for k, v in ed.public_jwk.items() if k != "alg"}
    document = {"keys": [
        ed.public_jwk, es.public_jwk, rs.public_jwk,
        {**no_alg, "kid": "inferred"},
        {**ed.public_jwk, "kid": "enc", "use": "enc"},
        {**ed.public_jwk, "kid": ""},
        {k: v for k, v in ed.public_jwk.items() if k != "kid"},
        {"kid": "broken", "kty": "OKP", "crv": "Ed25519", "x": "!!"},
        {"kid": "hmac", "kty": "oct", "k": "c2VjcmV0"},
        "not an object",
    ]}
    keys = parse_jwks(document)
    assert {kid: k.alg for kid, k in keys.items()} == {
        ed.kid: "EdDSA", es.kid: "ES256", rs.kid: "RS256", "inferred": "EdDSA"}
    assert keys[ed.kid].jwk.key_id == ed.kid


@pytest.mark.parametrize("document", [[], {}, {"keys": {}}, "keys"])
def test_parse_jwks_refuses_what_is_not_a_jwks(document: Any) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document)


async def test_static_and_local_sources() -> None:
    from core.security import KeyManager, MemoryKeyStore

    k = key()
    static = StaticKeySource([k.verification])
    assert await static.get(k.kid) is k.verification
    assert await static.get("x") is None
    manager = await KeyManager.open(MemoryKeyStore())
    local = LocalKeySource(manager)
    assert await local.get(manager.signer.kid) is manager.signer.verification
    assert await local.get("x") is None


async def test_a_known_kid_never_fetches_even_after_the_interval() -> None:
    k = key()
    issuer, clock = Issuer(k), Clock()
    jwks = client(issuer, clock, min_refresh_interval=1)
    await jwks.get(k.kid)
    clock.now += 100
    assert await jwks.get(k.kid) is not None
    assert issuer.requests == 1


async def test_the_fetch_asks_for_json_within_the_timeout() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"keys": []})

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    await JwksClient("http://issuer/jwks", http=http, timeout=1.5).refresh()
    await JwksClient("http://issuer/jwks", http=http).refresh()
    assert seen[0].headers["accept"] == "application/json"
    assert str(seen[0].url) == "http://issuer/jwks"
    assert seen[0].extensions["timeout"]["read"] == 1.5
    assert seen[1].extensions["timeout"]["read"] == 5.0


def test_the_defaults() -> None:
    jwks = JwksClient("http://x")
    assert (jwks.refresh_interval, jwks.min_refresh_interval, jwks.timeout) == (300.0, 5.0, 5.0)
    assert jwks.clock is time.monotonic
    assert jwks.fetches == 0 and jwks.keys == {}
    assert MAX_JWKS_BYTES == 256 * 1024


async def test_a_jwks_of_exactly_the_size_bound_is_read() -> None:
    head, tail = b'{"keys": [], "pad": "', b'"}'
    issuer, clock = Issuer(), Clock()
    issuer.body = head + b"x" * (MAX_JWKS_BYTES - len(head) - len(tail)) + tail
    jwks = client(issuer, clock)
    assert await jwks.get("kid") is None, "read, and empty: an unknown kid, not a 503"


async def test_the_refresh_task_is_named() -> None:
    issuer = Issuer(key())
    jwks = JwksClient("http://issuer/jwks", refresh_interval=60,
                      http=httpx.AsyncClient(transport=httpx.MockTransport(issuer)))
    await jwks.start()
    assert jwks._loop is not None and jwks._loop.get_name() == "jwks-refresh"
    await jwks.stop()
    assert jwks._loop is None


def test_a_zero_min_interval_is_allowed() -> None:
    assert JwksClient("http://x", min_refresh_interval=0).min_refresh_interval == 0


@pytest.mark.parametrize("options", [{"refresh_interval": 0}, {"min_refresh_interval": -1},
                                     {"timeout": 0}])
def test_bad_intervals_say_what(options: dict[str, Any]) -> None:
    with pytest.raises(SecurityError, match=r"^JWKS intervals and timeout must be positive$"):
        JwksClient("http://x", **options)


@pytest.mark.parametrize("document", [[], {"keys": "x"}])
def test_a_document_that_is_not_a_jwks_says_so(document: Any) -> None:
    with pytest.raises(JwksError, match=r'^a JWKS is a JSON object with a "keys" list$'):
        parse_jwks(document)


def test_parse_jwks_skips_bad_entries_wherever_they_are() -> None:
    good = key()
    no_use = {k: v for k, v in good.public_jwk.items() if k != "use"}
    for bad in ("text", {**good.public_jwk, "kid": None}, {**good.public_jwk, "use": "enc"},
                {"kid": "hmac", "kty": "oct", "k": "c2VjcmV0"},
                {"kid": "broken", "kty": "OKP", "crv": "Ed25519", "x": "!!"}):
        assert set(parse_jwks({"keys": [bad, no_use]})) == {good.kid}, bad


async def test_fetches_are_counted_and_small_timeouts_allowed() -> None:
    k = key()
    issuer, clock = Issuer(k), Clock()
    jwks = client(issuer, clock, timeout=0.5)
    await jwks.refresh()
    await jwks.refresh()
    assert jwks.fetches == 2 == issuer.requests
    assert jwks.timeout == 0.5
