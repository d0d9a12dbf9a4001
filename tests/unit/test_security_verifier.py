"""TokenVerifier: good tokens become principals; every forged or broken one is refused with
the rule it broke, directly and through a FastAPI app (401, WWW-Authenticate)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from core.bases import install_exception_handlers
from core.security import (
    CurrentPrincipal,
    KeyManager,
    LocalKeySource,
    MemoryKeyStore,
    Security,
    StaticKeySource,
    TokenIssuer,
    TokenRejectedError,
    TokenVerifier,
    install_security,
)
from core.security.errors import SecurityError
from core.security.keys import SigningKey
from core.security.verifier import MAX_TOKEN_BYTES
from tests.security_support import ATTACKS, AUDIENCE, ISSUER, Attack, claims, sign


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("EdDSA", now=time.time())


@pytest.fixture(scope="module")
def verifier(key: SigningKey) -> TokenVerifier:
    return TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture
async def client(verifier: TokenVerifier) -> AsyncIterator[AsyncClient]:
    app = FastAPI()
    install_exception_handlers(app)
    install_security(app, Security(verifier))

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"sub": principal.subject, "kind": principal.kind,
                "roles": sorted(principal.roles)}

    async with AsyncClient(transport=ASGITransport(app), base_url="http://test") as http:
        yield http


async def test_a_good_token_gives_its_principal(verifier: TokenVerifier, key: SigningKey) -> None:
    token = sign(key, claims(kind="service", roles=["a", "b"], permissions=["x:y"]))
    principal = await verifier.verify(token)
    assert principal.subject == "user-1"
    assert principal.kind == "service"
    assert principal.roles == {"a", "b"}
    assert principal.permissions == {"x:y"}
    assert principal.token == token
    assert principal.claims["jti"] == "j-1"


async def test_roles_and_permissions_may_be_left_out(verifier: TokenVerifier,
                                                    key: SigningKey) -> None:
    principal = await verifier.verify(sign(key, claims(roles=None, permissions=None)))
    assert (principal.kind, principal.roles, principal.permissions) == ("user", set(), set())


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
async def test_an_access_token_type_passes_in_any_spelling_rfc_9068_allows(
        verifier: TokenVerifier, key: SigningKey, typ: str) -> None:
    assert (await verifier.verify(sign(key, typ=typ))).subject == "user-1"


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
async def test_the_verifier_refuses(attack: Attack, verifier: TokenVerifier,
                                    key: SigningKey) -> None:
    with pytest.raises(TokenRejectedError) as refused:
        await verifier.verify(attack.make(key))
    assert refused.value.rule == attack.rule
    assert refused.value.status_code == 401


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
async def test_the_app_answers_401_naming_the_rule(attack: Attack, client: AsyncClient,
                                                   key: SigningKey) -> None:
    response = await client.get("/me", headers={"authorization": f"Bearer {attack.make(key)}"})
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_token"
    assert error["message"].startswith(f"{attack.rule}: ")
    assert error["fields"][0]["code"] == attack.rule
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')


async def test_the_app_lets_a_good_token_through(client: AsyncClient, key: SigningKey) -> None:
    response = await client.get("/me", headers={"authorization": f"bearer {sign(key)}"})
    assert response.status_code == 200
    assert response.json() == {"sub": "user-1", "kind": "user", "roles": ["driver"]}


@pytest.mark.parametrize("skew", [-25, 25])
async def test_clock_skew_within_the_leeway_is_accepted(skew: int, verifier: TokenVerifier,
                                                        key: SigningKey) -> None:
    now = int(time.time())
    token = sign(key, claims(iat=now + skew, nbf=now + skew, exp=now + 300 if skew > 0
                             else now + skew))
    assert (await verifier.verify(token)).subject == "user-1"


async def test_the_leeway_is_configurable(key: SigningKey) -> None:
    strict = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                           audience=AUDIENCE, leeway=0)
    with pytest.raises(TokenRejectedError, match="expired"):
        await strict.verify(sign(key, claims(exp=int(time.time()) - 5)))


async def test_a_token_may_name_several_audiences(verifier: TokenVerifier,
                                                  key: SigningKey) -> None:
    principal = await verifier.verify(sign(key, claims(aud=["billing", AUDIENCE])))
    assert principal.subject == "user-1"


async def test_a_verifier_may_accept_several_audiences(key: SigningKey) -> None:
    either = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                           audience=["gateway", AUDIENCE])
    assert (await either.verify(sign(key))).subject == "user-1"


async def test_an_algorithm_off_the_allow_list_is_refused_even_with_its_key() -> None:
    es = SigningKey.generate("ES256", now=time.time())
    eddsa_only = TokenVerifier(StaticKeySource([es.verification]), issuer=ISSUER,
                               audience=AUDIENCE, algorithms=["EdDSA"])
    with pytest.raises(TokenRejectedError) as refused:
        await eddsa_only.verify(sign(es))
    assert refused.value.rule == "algorithm_not_allowed"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_es256_and_rs256_tokens_verify(alg: str) -> None:
    other = SigningKey.generate(alg, now=time.time())
    verifier = TokenVerifier(StaticKeySource([other.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    assert (await verifier.verify(sign(other))).subject == "user-1"


async def test_the_size_bound_is_configurable_and_exact(key: SigningKey) -> None:
    token = sign(key)
    exact = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                          audience=AUDIENCE, max_token_bytes=len(token))
    assert (await exact.verify(token)).subject == "user-1"
    smaller = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                            audience=AUDIENCE, max_token_bytes=len(token) - 1)
    with pytest.raises(TokenRejectedError, match="token_too_large"):
        await smaller.verify(token)
    assert MAX_TOKEN_BYTES == 8192


async def test_a_missing_claim_is_named(verifier: TokenVerifier, key: SigningKey) -> None:
    with pytest.raises(TokenRejectedError, match='"aud"'):
        await verifier.verify(sign(key, claims(aud=None)))


async def test_a_non_string_jti_or_iat_is_an_invalid_claim(verifier: TokenVerifier,
                                                           key: SigningKey) -> None:
    for bad in (claims(jti=5), claims(iat="yesterday")):
        with pytest.raises(TokenRejectedError) as refused:
            await verifier.verify(sign(key, bad))
        assert refused.value.rule == "invalid_claim"


async def test_permissions_must_be_strings(verifier: TokenVerifier, key: SigningKey) -> None:
    with pytest.raises(TokenRejectedError, match="permissions must be a list of strings"):
        await verifier.verify(sign(key, claims(permissions=["a", 1])))


async def test_non_ascii_is_malformed(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenRejectedError) as refused:
        await verifier.verify("é.b.c")
    assert refused.value.rule == "malformed"


async def test_the_description_is_a_safe_quoted_string() -> None:
    rejected = TokenRejectedError("malformed", 'say "hi"\\\n')
    assert rejected.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="say \'hi\'\\\\?"')
    assert TokenRejectedError("malformed", "k\u00e9y").headers["WWW-Authenticate"].endswith('"k?y"')


@pytest.mark.parametrize("options", [
    {"algorithms": ["HS256"]}, {"algorithms": ["EdDSA", "none"]}, {"algorithms": []},
    {"issuer": ""}, {"audience": ""}, {"leeway": -1}, {"max_token_bytes": 0},
])
def test_unsafe_configurations_are_refused(options: dict[str, Any], key: SigningKey) -> None:
    settings: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, **options}
    with pytest.raises(SecurityError):
        TokenVerifier(StaticKeySource([key.verification]), **settings)


async def test_the_issuer_verifies_its_own_tokens_across_rotation() -> None:
    manager = await KeyManager.open(MemoryKeyStore(), max_token_ttl=600)
    issuer = TokenIssuer(manager, ISSUER)
    verifier = TokenVerifier(LocalKeySource(manager), issuer=ISSUER, audience=AUDIENCE)
    before = issuer.issue("u-1", AUDIENCE, 60)
    await manager.rotate("ES256")
    after = issuer.issue("u-2", AUDIENCE, 60)
    assert jwt.get_unverified_header(after)["alg"] == "ES256"
    assert (await verifier.verify(before)).subject == "u-1"
    assert (await verifier.verify(after)).subject == "u-2"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_a_short_or_foreign_signature_is_a_bad_signature(alg: str) -> None:
    from tests.security_support import short_signature

    own = SigningKey.generate(alg, now=time.time())
    stranger = SigningKey.generate(alg, now=time.time())
    verifier = TokenVerifier(StaticKeySource([own.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    for token in (short_signature(sign(own)), sign(stranger, kid=own.kid)):
        with pytest.raises(TokenRejectedError) as refused:
            await verifier.verify(token)
        assert refused.value.rule == "bad_signature"


async def test_the_clock_decides_expiry(key: SigningKey) -> None:
    now = [1_000_000.0]
    verifier = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                             audience=AUDIENCE, leeway=10, clock=lambda: now[0])
    token = sign(key, claims(iat=1_000_000, nbf=1_000_000, exp=1_000_100))
    now[0] = 1_000_109.9
    assert (await verifier.verify(token)).subject == "user-1"
    now[0] = 1_000_110
    with pytest.raises(TokenRejectedError, match="expired"):
        await verifier.verify(token)
    now[0] = 999_990
    assert (await verifier.verify(token)).subject == "user-1"
    now[0] = 999_989.9
    with pytest.raises(TokenRejectedError, match=r"not_yet_valid: .*\(iat\)"):
        await verifier.verify(token)
    late_nbf = sign(key, claims(iat=1_000_000, nbf=1_000_050, exp=1_000_100))
    now[0] = 1_000_039.9
    with pytest.raises(TokenRejectedError, match=r"not_yet_valid: .*\(nbf\)"):
        await verifier.verify(late_nbf)
    now[0] = 1_000_040
    assert (await verifier.verify(late_nbf)).subject == "user-1"


DESCRIPTIONS = {
    "alg none": "unsigned tokens (alg none) are refused",
    "no alg": "the token header names no algorithm (alg)",
    "HS256 with the public key as secret": "algorithm 'HS256' is not allowed",
    "unknown kid": "no key 'not-a-key' at the issuer",
    "no kid": "the token header names no key (kid)",
    "tampered payload": "the signature does not match",
    "expired": "the token has expired",
    "nbf in the future": "the token is not valid yet (nbf)",
    "iat in the future": "the token is issued in the future (iat)",
    "wrong issuer": "the token is from another issuer",
    "wrong audience": "the token is for another audience",
    "no sub": 'the token has no "sub" claim',
    "one part": "a token is three base64url parts",
    "header not base64": "the token header is not base64url",
    "header not JSON": "the token header is not JSON",
    "header a JSON list": "the token header is not a JSON object",
    "payload not JSON": "the token payload is not JSON",
    "payload a JSON list": "the token payload is not a JSON object",
    "empty signature": "the token has no signature",
    "signature spelled non-canonically": "the token signature is not canonical base64url",
    "a critical header extension": "no critical header extension is supported",
    "exp not a number": "exp must be a number of seconds",
    "nbf not a number": "nbf must be a number of seconds",
    "aud a number": "aud must be a string or a list of strings",
    "sub empty": "sub must be a non-empty string",
    "huge": "token longer than 8192 bytes",
    "roles not a list": "roles must be a list of strings",
    "unknown kind": "kind must be user or service",
    "no kind": 'the token has no "kind" claim',
    "typ JWT": "not an access token (typ must be at+jwt)",
}


@pytest.mark.parametrize("name", sorted(DESCRIPTIONS))
async def test_each_refusal_says_why_in_words(name: str, verifier: TokenVerifier,
                                              key: SigningKey) -> None:
    attack = next(a for a in ATTACKS if a.name == name)
    with pytest.raises(TokenRejectedError) as refused:
        await verifier.verify(attack.make(key))
    assert refused.value.description == DESCRIPTIONS[name]


async def test_a_key_of_another_algorithm_is_named(verifier: TokenVerifier,
                                                   key: SigningKey) -> None:
    from tests.security_support import other_type_key_same_kid

    with pytest.raises(TokenRejectedError) as refused:
        await verifier.verify(other_type_key_same_kid(key))
    assert refused.value.description == f"key {key.kid!r} is for EdDSA, the token says 'ES256'"


async def test_a_jti_of_another_type_says_so(verifier: TokenVerifier, key: SigningKey) -> None:
    with pytest.raises(TokenRejectedError, match=r"^invalid_claim: jti must be a string$"):
        await verifier.verify(sign(key, claims(jti=1)))
    assert (await verifier.verify(sign(key, claims(jti=None)))).subject == "user-1"


def test_the_defaults(key: SigningKey) -> None:
    verifier = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    assert verifier.algorithms == {"EdDSA", "ES256", "RS256"}
    assert (verifier.leeway, verifier.max_token_bytes) == (30.0, 8192)
    assert verifier.clock is time.time
    assert verifier.audiences == {AUDIENCE}


@pytest.mark.parametrize(("options", "message"), [
    ({"algorithms": ["HS256", "EdDSA"]}, r"^algorithms must be asymmetric ones, not \['HS256'\]$"),
    ({"audience": ["a", ""]}, "^a verifier needs an issuer and an audience$"),
    ({"audience": []}, "^a verifier needs an issuer and an audience$"),
    ({"max_token_bytes": -1}, "^leeway must be >= 0 and max_token_bytes > 0$"),
])
def test_configuration_errors_say_what(options: dict[str, Any], message: str,
                                       key: SigningKey) -> None:
    settings: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, **options}
    with pytest.raises(SecurityError, match=message):
        TokenVerifier(StaticKeySource([key.verification]), **settings)


def test_every_asymmetric_algorithm_may_be_allowed_and_zero_leeway_too(
        key: SigningKey) -> None:
    from core.security.verifier import ASYMMETRIC

    assert ASYMMETRIC == {"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512",
                          "PS256", "PS384", "PS512"}
    verifier = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                             audience=AUDIENCE, algorithms=sorted(ASYMMETRIC), leeway=0,
                             max_token_bytes=1)
    assert verifier.leeway == 0


async def test_a_float_time_and_an_absent_nbf_are_fine(verifier: TokenVerifier,
                                                       key: SigningKey) -> None:
    token = sign(key, claims(exp=time.time() + 60.5, nbf=None))
    assert (await verifier.verify(token)).subject == "user-1"


async def test_the_refusal_names_the_authorization_header(client: AsyncClient) -> None:
    response = await client.get("/me", headers={"authorization": "Bearer a.b"})
    assert response.json()["error"]["fields"] == [{
        "field": "authorization", "reason": "a token is three base64url parts",
        "code": "malformed", "location": "header"}]


async def test_long_kids_and_algs_are_quoted_short(verifier: TokenVerifier,
                                                   key: SigningKey) -> None:
    long_kid = "k" * 70
    with pytest.raises(TokenRejectedError) as refused:
        await verifier.verify(sign(key, kid=long_kid))
    assert refused.value.description == f"no key {'k' * 64!r} at the issuer"
    long_alg = "A" * 40
    from tests.security_support import raw

    with pytest.raises(TokenRejectedError) as refused:
        await verifier.verify(raw({"alg": long_alg, "kid": key.kid}, claims(), b"x"))
    assert refused.value.description == f"algorithm {'A' * 32!r} is not allowed"
    other = SigningKey(long_kid, "ES256", SigningKey.generate("ES256", now=0).private_key, 0)
    mixed = TokenVerifier(StaticKeySource([other.verification]), issuer=ISSUER,
                          audience=AUDIENCE, algorithms=["EdDSA", "ES256"])
    with pytest.raises(TokenRejectedError) as refused:
        await mixed.verify(sign(key, kid=long_kid))
    assert refused.value.description == (
        f"key {'k' * 64!r} is for ES256, the token says 'EdDSA'")


def test_a_segment_whose_encoding_ends_in_x_is_canonical() -> None:
    """The canonical check strips only padding: base64url may end in X (an ES384 signature
    could)."""
    from core.security.verifier import _decode

    assert _decode("QUJX", "signature") == b"AB\x57"
    assert _decode("", "signature") == b""
    with pytest.raises(TokenRejectedError, match="not canonical"):
        _decode("QUJY" + "QR", "signature")
