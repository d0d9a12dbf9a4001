"""The edge's verified-token cache (gateway.edge.token_cache) with real keys and tokens: a
token verifies once, is refused from its `exp` on, a tampered one never hits an entry, the
bound is an LRU, and a key that left the JWKS (or was replaced under its kid) stops its
tokens at once, as it does without the cache."""

from __future__ import annotations

import json
import time

import httpx

from core.security import JwksClient, KeySource, SigningKey, TokenVerifier, VerificationKey
from gateway.edge.auth import EdgeAuth
from gateway.errors import GatewayError
from gateway.tests.test_edge_auth import KEY, PROTECTED, Clock, CountingKeys, bearer
from tests.security_support import AUDIENCE, ISSUER, claims, sign, tamper_payload, tamper_signature


def edge(keys: KeySource, clock: Clock, size: int = 100) -> EdgeAuth:
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=30, clock=clock)
    return EdgeAuth(verifier, cache_size=size)


async def refused(auth: EdgeAuth, token: str) -> GatewayError:
    try:
        await auth.authenticate(PROTECTED, bearer(token))
    except GatewayError as refusal:
        return refusal
    raise AssertionError("the token was let through")


async def test_the_same_token_twice_verifies_once() -> None:
    keys, clock = CountingKeys(), Clock()
    auth = edge(keys, clock)
    token = sign(KEY)
    first = await auth.authenticate(PROTECTED, bearer(token))
    assert await auth.authenticate(PROTECTED, bearer(token)) is first
    assert (keys.asked, len(auth.verified)) == (1, 1)


async def test_an_entry_is_good_until_exp_and_never_past_it() -> None:
    keys, clock = CountingKeys(), Clock()
    auth = edge(keys, clock)
    now = int(clock.now)
    token = sign(KEY, claims(iat=now, exp=now + 3600))
    await auth.authenticate(PROTECTED, bearer(token))
    clock.now = now + 3599.9  # an hour on: still from the cache (no time cap by default)
    await auth.authenticate(PROTECTED, bearer(token))
    assert keys.asked == 1
    clock.now = now + 3600  # at exp: verified again (the verifier's leeway still takes it)
    await auth.authenticate(PROTECTED, bearer(token))
    assert keys.asked == 2, "answered from the cache at the token's exp"
    clock.now = now + 3600 + 31
    assert (await refused(auth, token)).code == "expired"


async def test_a_tampered_token_never_hits_a_cached_entry() -> None:
    keys, clock = CountingKeys(), Clock()
    auth = edge(keys, clock)
    token = sign(KEY)
    await auth.authenticate(PROTECTED, bearer(token))
    assert (await refused(auth, tamper_signature(token))).code == "bad_signature"
    assert (await refused(auth, tamper_payload(token))).code == "bad_signature"
    assert (await refused(auth, token + "A")).code == "bad_signature"
    assert keys.asked == 4, "each tampered token was verified, none answered from the cache"
    assert len(auth.verified) == 1


async def test_the_bound_drops_the_least_recently_used() -> None:
    keys, clock = CountingKeys(), Clock()
    auth = edge(keys, clock, size=2)
    a, b, c = (sign(KEY, claims(jti=name)) for name in "abc")
    await auth.authenticate(PROTECTED, bearer(a))
    await auth.authenticate(PROTECTED, bearer(b))
    await auth.authenticate(PROTECTED, bearer(a))  # a used last: b is the one to go
    await auth.authenticate(PROTECTED, bearer(c))
    assert (keys.asked, len(auth.verified)) == (3, 2)
    await auth.authenticate(PROTECTED, bearer(a))
    assert keys.asked == 3, "a stayed"
    await auth.authenticate(PROTECTED, bearer(b))
    assert keys.asked == 4, "b went"


async def test_a_token_whose_key_left_the_static_keys_is_refused() -> None:
    keys, clock = CountingKeys(), Clock()
    auth = edge(keys, clock)
    token = sign(KEY)
    await auth.authenticate(PROTECTED, bearer(token))
    del keys.keys[KEY.kid]
    assert (await refused(auth, token)).code == "unknown_kid"
    assert len(auth.verified) == 0


class Issuer:
    """The JWKS endpoint of an issuer whose published keys the test changes."""

    def __init__(self, *keys: SigningKey) -> None:
        self.published = list(keys)

    def handler(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(
            {"keys": [key.public_jwk for key in self.published]}).encode())


async def test_a_key_withdrawn_from_the_jwks_stops_its_cached_tokens_at_the_refresh() -> None:
    rotated = SigningKey.generate("EdDSA", now=time.time())
    issuer = Issuer(KEY, rotated)
    http = httpx.AsyncClient(transport=httpx.MockTransport(issuer.handler))
    jwks = JwksClient("http://auth/.well-known/jwks.json", http=http, min_refresh_interval=0)
    clock = Clock()
    auth = edge(jwks, clock)
    old, new = sign(KEY), sign(rotated, claims(jti="new"))
    await jwks.refresh()
    await auth.authenticate(PROTECTED, bearer(old))
    await auth.authenticate(PROTECTED, bearer(new))
    assert (jwks.fetches, len(auth.verified)) == (1, 2)
    await auth.authenticate(PROTECTED, bearer(old))
    assert jwks.fetches == 1, "answered from the cache"
    issuer.published = [rotated]  # KEY revoked
    await jwks.refresh()
    assert (await refused(auth, old)).code == "unknown_kid"
    assert (await auth.authenticate(PROTECTED, bearer(new))) is not None
    await http.aclose()


async def test_a_key_replaced_under_the_same_kid_is_not_trusted_from_the_cache() -> None:
    keys, clock = CountingKeys(), Clock()
    auth = edge(keys, clock)
    token = sign(KEY)
    await auth.authenticate(PROTECTED, bearer(token))
    impostor = SigningKey.generate("EdDSA", now=time.time())
    keys.keys[KEY.kid] = VerificationKey(KEY.kid, impostor.alg, impostor.verification.jwk)
    assert (await refused(auth, token)).code == "bad_signature"


class OpaqueKeys:
    """A key source the cache cannot ask synchronously: nothing is cached."""

    def __init__(self) -> None:
        self.asked = 0

    async def get(self, kid: str) -> VerificationKey | None:
        self.asked += 1
        return KEY.verification if kid == KEY.kid else None


async def test_a_source_that_cannot_say_which_keys_it_holds_is_never_cached() -> None:
    keys, clock = OpaqueKeys(), Clock()
    auth = edge(keys, clock)
    token = sign(KEY)
    for _ in range(3):
        await auth.authenticate(PROTECTED, bearer(token))
    assert (keys.asked, len(auth.verified)) == (3, 0)
