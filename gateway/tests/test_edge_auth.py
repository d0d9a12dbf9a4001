"""Edge authentication with real keys and tokens: every refusal a clear 401/403/503 with the
code the services use, a public route that never reads a token, and the identity headers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from core.resilience import LocalRateLimiter, RateLimitPolicy
from core.security import (
    KeysUnavailableError,
    Principal,
    SigningKey,
    StaticKeySource,
    TokenVerifier,
    VerificationKey,
)
from gateway.edge.auth import EdgeAuth, identity_headers, strip_identity
from gateway.edge.rate_limit import RefusedTokens
from gateway.errors import GatewayError
from tests.security_support import AUDIENCE, ISSUER, claims, sign, tamper_signature


@dataclass(frozen=True, slots=True)
class Route:
    """The part of gateway.routes.Route that authentication reads."""

    public: bool = False
    permissions: frozenset[str] = frozenset()


KEY = SigningKey.generate("EdDSA", now=time.time())
STRANGER = SigningKey.generate("EdDSA", now=time.time())  # not published by the issuer
AUTH = EdgeAuth(TokenVerifier(StaticKeySource([KEY.verification]), issuer=ISSUER,
                              audience=AUDIENCE))
PROTECTED = Route()
DRIVERS_WRITE = Route(permissions=frozenset({"drivers:write"}))


def bearer(token: str, scheme: str = "Bearer") -> list[tuple[bytes, bytes]]:
    return [(b"host", b"gw"), (b"authorization", f"{scheme} {token}".encode())]


async def refusal(headers: list[tuple[bytes, bytes]], route: Route = PROTECTED,
                  auth: EdgeAuth = AUTH) -> GatewayError:
    with pytest.raises(GatewayError) as refused:
        await auth.authenticate(route, headers)
    return refused.value


async def test_a_public_route_ignores_even_a_garbage_token() -> None:
    for headers in (bearer("garbage"), bearer(sign(KEY, claims(exp=1))), [], bearer("x", "Basic")):
        assert await AUTH.authenticate(Route(public=True), headers) is None
    assert await EdgeAuth(None).authenticate(Route(public=True), bearer("x")) is None


async def test_a_valid_token_gives_its_principal() -> None:
    token = sign(KEY, claims(sub="user-42", permissions=["drivers:write", "drivers:read"]))
    principal = await AUTH.authenticate(DRIVERS_WRITE, bearer(token))
    assert principal is not None
    assert (principal.subject, principal.kind, principal.token) == ("user-42", "user", token)
    assert await AUTH.authenticate(PROTECTED, bearer(token, "bEaReR")) == principal, (
        "the scheme is case-insensitive")


async def test_no_token_is_401_missing_token_with_a_bare_challenge() -> None:
    refused = await refusal([(b"host", b"gw")])
    assert (refused.status, refused.code) == (401, "missing_token")
    assert refused.message == "missing_token: this route needs a bearer token"
    assert refused.headers == {"WWW-Authenticate": "Bearer"}, "RFC 6750 3.1: no error code"


@pytest.mark.parametrize(("headers", "why"), [
    (bearer("abc", "Basic"), "expected Authorization: Bearer <token>"),
    (bearer("", "Bearer"), "expected Authorization: Bearer <token>"),
    ([(b"authorization", b"Bearer")], "expected Authorization: Bearer <token>"),
    ([(b"authorization", b"Token abc")], "expected Authorization: Bearer <token>"),
    ([*bearer("a"), (b"authorization", b"Bearer b")], "send one Authorization header"),
    (bearer("not-a-jwt"), "a token is three base64url parts"),
])
async def test_an_unreadable_credential_is_401_malformed(
    headers: list[tuple[bytes, bytes]], why: str,
) -> None:
    refused = await refusal(headers)
    assert (refused.status, refused.code) == (401, "malformed")
    assert why in refused.message
    assert refused.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize(("token", "rule"), [
    (lambda: sign(KEY, claims(exp=int(time.time()) - 120)), "expired"),
    (lambda: tamper_signature(sign(KEY)), "bad_signature"),
    (lambda: sign(STRANGER), "unknown_kid"),
    (lambda: sign(KEY, kid="rotated-away"), "unknown_kid"),
    (lambda: sign(KEY, claims(aud="billing")), "wrong_audience"),
    (lambda: sign(KEY, claims(iss="https://evil.test")), "wrong_issuer"),
    (lambda: sign(KEY, claims(sub=None)), "missing_claim"),
], ids=["expired", "bad signature", "unpublished key", "unknown kid", "wrong audience",
        "wrong issuer", "no subject"])
async def test_a_refused_token_is_401_naming_the_rule_it_broke(
    token: Callable[[], str], rule: str,
) -> None:
    refused = await refusal(bearer(token()))
    assert (refused.status, refused.code) == (401, rule)
    assert refused.message.startswith(f"{rule}: ")
    challenge = refused.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert refused.message.split(": ", 1)[1].replace('"', "'") in challenge


async def test_a_missing_permission_is_403_naming_it() -> None:
    route = Route(permissions=frozenset({"drivers:write", "admin:all", "drivers:read"}))
    token = sign(KEY, claims(permissions=["drivers:read"]))
    refused = await refusal(bearer(token), route)
    assert (refused.status, refused.code) == (403, "forbidden")
    assert refused.message == "missing permission admin:all, drivers:write"
    assert "WWW-Authenticate" not in refused.headers


async def test_a_route_without_permissions_takes_any_valid_token() -> None:
    principal = await AUTH.authenticate(PROTECTED, bearer(sign(KEY, claims(permissions=[]))))
    assert principal is not None and principal.permissions == frozenset()


class NoKeys:
    """A key source that never had keys (the issuer's JWKS never answered)."""

    async def get(self, kid: str) -> VerificationKey | None:
        raise KeysUnavailableError()


async def test_keys_unavailable_is_503_with_retry_after_not_a_401() -> None:
    auth = EdgeAuth(TokenVerifier(NoKeys(), issuer=ISSUER, audience=AUDIENCE))
    refused = await refusal(bearer(sign(KEY)), auth=auth)
    assert (refused.status, refused.code) == (503, "keys_unavailable")
    assert refused.headers == {"Retry-After": "5"}


async def test_a_protected_route_without_a_verifier_is_503_never_let_through() -> None:
    refused = await refusal(bearer(sign(KEY)), auth=EdgeAuth(None))
    assert (refused.status, refused.code) == (503, "auth_unavailable")


def test_client_sent_identity_headers_are_stripped() -> None:
    headers = [(b"host", b"gw"), (b"x-authenticated-subject", b"admin"),
               (b"authorization", b"Bearer t"), (b"x-authenticated-kind", b"service"),
               (b"x-authenticated-roles", b"admin"), (b"x-authenticatedish", b"kept")]
    assert strip_identity(headers) == [(b"host", b"gw"), (b"authorization", b"Bearer t"),
                                       (b"x-authenticatedish", b"kept")]
    assert len(headers) == 6, "the scope's own list is left alone"


def test_identity_headers_name_the_verified_caller() -> None:
    principal = Principal(subject="user-42", kind="service")
    assert identity_headers(principal) == [(b"x-authenticated-subject", b"user-42"),
                                           (b"x-authenticated-kind", b"service")]
    assert AUTH.identity_headers(principal) == identity_headers(principal)


def test_a_subject_that_could_break_a_header_is_percent_encoded() -> None:
    for subject, sent in [("a\r\nx-admin: 1", b"a%0D%0Ax-admin%3A%201"),
                          ("jos\u00e9", b"jos%C3%A9"), ("jos%C3%A9", b"jos%25C3%25A9")]:
        assert identity_headers(Principal(subject=subject, kind="user"))[0] == (
            b"x-authenticated-subject", sent)


class CountingKeys(StaticKeySource):
    """The issuer's key, counting how often a verifier asks for it (once per verification)."""

    def __init__(self) -> None:
        super().__init__([KEY.verification])
        self.asked = 0

    async def get(self, kid: str) -> VerificationKey | None:
        self.asked += 1
        return await super().get(kid)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def counted(cache_seconds: float = 30.0, cache_size: int = 100,
            ) -> tuple[EdgeAuth, CountingKeys, Clock]:
    keys, clock = CountingKeys(), Clock()
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=5, clock=clock)
    return EdgeAuth(verifier, cache_seconds=cache_seconds, cache_size=cache_size), keys, clock


async def test_a_token_is_verified_once_and_its_permissions_checked_on_every_route() -> None:
    auth, keys, _ = counted()
    token = sign(KEY, claims(permissions=["drivers:read"]))
    first = await auth.authenticate(PROTECTED, bearer(token))
    assert await auth.authenticate(PROTECTED, bearer(token)) is first
    assert keys.asked == 1
    refused = await refusal(bearer(token), DRIVERS_WRITE, auth=auth)
    assert (refused.status, refused.message) == (403, "missing permission drivers:write")


async def test_a_cached_token_is_refused_once_it_expires() -> None:
    auth, keys, clock = counted(cache_seconds=60)
    token = sign(KEY, claims(iat=int(clock.now), exp=int(clock.now) + 10))
    assert await auth.authenticate(PROTECTED, bearer(token)) is not None
    clock.now += 12  # past exp, within the leeway: the verifier still takes it
    assert await auth.authenticate(PROTECTED, bearer(token)) is not None
    assert keys.asked == 2, "not answered from the cache past the token's exp"
    clock.now += 10
    refused = await refusal(bearer(token), auth=auth)
    assert (refused.status, refused.code) == (401, "expired")


async def test_a_cached_token_is_verified_again_after_the_cache_time() -> None:
    auth, keys, clock = counted(cache_seconds=30)
    token = sign(KEY, claims(iat=int(clock.now), exp=int(clock.now) + 3600))
    await auth.authenticate(PROTECTED, bearer(token))
    clock.now += 29
    await auth.authenticate(PROTECTED, bearer(token))
    assert keys.asked == 1
    clock.now += 2
    await auth.authenticate(PROTECTED, bearer(token))
    assert keys.asked == 2


async def test_refused_tokens_are_never_cached_and_the_cache_is_bounded() -> None:
    auth, keys, _ = counted(cache_size=3)
    bad = tamper_signature(sign(KEY))
    for _ in range(2):
        await refusal(bearer(bad), auth=auth)
    assert (keys.asked, len(auth.verified)) == (2, 0)
    tokens = [sign(KEY, claims(jti=f"j-{i}")) for i in range(5)]
    for token in tokens:
        await auth.authenticate(PROTECTED, bearer(token))
    assert len(auth.verified) == 3
    for token in tokens[2:]:
        await auth.authenticate(PROTECTED, bearer(token))
    assert keys.asked == 7, "the newest stay"
    await auth.authenticate(PROTECTED, bearer(tokens[0]))
    assert keys.asked == 8, "the oldest went"


async def test_no_cache_verifies_every_time() -> None:
    auth, keys, _ = counted(cache_seconds=0)
    token = sign(KEY)
    for _ in range(3):
        await auth.authenticate(PROTECTED, bearer(token))
    assert (keys.asked, len(auth.verified)) == (3, 0)


def guarded(limit: int = 3, window: float = 60) -> tuple[EdgeAuth, CountingKeys, Clock]:
    """An edge that allows `limit` refused tokens per address per `window` seconds, on the
    same fake clock as its verifier."""
    keys, clock = CountingKeys(), Clock()
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=5, clock=clock)
    refused = RefusedTokens(LocalRateLimiter(clock=clock),
                            RateLimitPolicy("refused-tokens", limit, window), clock=clock)
    return EdgeAuth(verifier, refused=refused), keys, clock


async def outcome(auth: EdgeAuth, token: str, ip: str) -> int:
    try:
        await auth.authenticate(PROTECTED, bearer(token), ip)
    except GatewayError as refused:
        return refused.status
    return 200


async def test_refused_tokens_per_address_then_429_without_a_signature_check() -> None:
    auth, keys, clock = guarded(limit=3, window=60)
    bad = tamper_signature(sign(KEY))
    assert [await outcome(auth, bad, "198.51.100.1") for _ in range(5)] == [401] * 3 + [429] * 2
    assert keys.asked == 3, "no signature checked once the address spent its refusals"
    with pytest.raises(GatewayError) as waiting:
        await auth.authenticate(PROTECTED, bearer(bad), "198.51.100.1")
    assert waiting.value.code == "rate_limited"
    assert waiting.value.headers == {"Retry-After": "20"}  # one refusal back every 60/3 s
    assert "3 per 60 s" in waiting.value.message
    assert await outcome(auth, bad, "198.51.100.2") == 401, "another address has its own"
    good = sign(KEY, claims(iat=int(clock.now), exp=int(clock.now) + 3600))
    assert await outcome(auth, good, "198.51.100.2") == 200
    assert await outcome(auth, good, "198.51.100.1") == 200, "a verified token costs nothing"
    other_good = sign(KEY, claims(sub="someone", iat=int(clock.now), exp=int(clock.now) + 3600))
    assert await outcome(auth, other_good, "198.51.100.1") == 429, "not verified while waiting"
    clock.now += 20
    asked = keys.asked
    assert [await outcome(auth, bad, "198.51.100.1") for _ in range(2)] == [401, 429]
    assert keys.asked == asked + 1, "one refusal back after the wait: one check"


async def test_an_ipv6_guesser_is_one_client_per_64_and_missing_tokens_are_free() -> None:
    auth, keys, _ = guarded(limit=2)
    bad = tamper_signature(sign(KEY))
    assert [await outcome(auth, bad, f"2001:db8::{n}") for n in range(1, 5)] == [
        401, 401, 429, 429]
    assert await outcome(auth, bad, "2001:db8:0:1::1") == 401, "the next /64"
    for _ in range(5):  # no token, or an unreadable one, costs no check and is not counted
        for headers in ([], bearer("x", "Basic")):
            with pytest.raises(GatewayError) as refused:
                await auth.authenticate(PROTECTED, headers, "2001:db8:0:1::2")
            assert refused.value.status == 401
    assert await outcome(auth, bad, "2001:db8:0:1::3") == 401, "its second refusal of two"
    assert keys.asked == 4
