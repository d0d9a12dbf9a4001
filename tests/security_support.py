"""Tokens for the security tests: well-formed ones, and every kind of forged or broken one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.security.keys import SigningKey
from core.security.types import ACCESS_TOKEN_TYPE

ISSUER = "https://auth.test"
AUDIENCE = "platform"


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims, now; an override of None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now,
                            "nbf": now, "exp": now + 300, "jti": "j-1", "kind": "user",
                            "roles": ["driver"], "permissions": ["drivers:read"]}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: SigningKey, payload: dict[str, Any] | None = None, **headers: Any) -> str:
    """`payload` (default: valid claims) signed by `key`, kid in the header unless overridden."""
    fields = {"kid": key.kid, "typ": ACCESS_TOKEN_TYPE, **headers}
    fields = {k: v for k, v in fields.items() if v is not None}
    return jwt.encode(payload if payload is not None else claims(), key.private_key,
                      algorithm=key.alg, headers=fields)


def raw(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(header)}.{b64(payload)}.{b64(signature) if signature else ''}"


def hs256_with_public_key(key: SigningKey) -> str:
    """The classic confusion: HS256 with the issuer's public key (PEM, as published) as secret."""
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64(header)}.{b64(claims())}".encode()
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64(mac)}"


def tamper_payload(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64(claims(sub='admin'))}.{signature}"


def tamper_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1:]}"


def other_type_key_same_kid(key: SigningKey) -> str:
    """A P-256 key signs, the header claims ES256 and the kid of an Ed25519 key."""
    intruder = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims(), intruder, algorithm="ES256",
                      headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})


def signed_bytes(key: SigningKey, body: bytes) -> str:
    """A correctly signed token whose payload is `body` (not necessarily JSON)."""
    return jwt.PyJWS().encode(body, key.private_key, algorithm=key.alg,
                              headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})


def short_signature(token: str) -> str:
    """The signature cut in half, still canonical base64url."""
    header, payload, signature = token.split(".")
    raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return f"{header}.{payload}.{b64(raw_signature[: len(raw_signature) // 2])}"


def non_canonical_signature(token: str) -> str:
    """The same signature bytes spelled differently: unused low bits of the last character set
    (an Ed25519 signature is 64 bytes, so its last character carries 4 such bits)."""
    header, payload, signature = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) | 1]
    return f"{header}.{payload}.{signature[:-1]}{last}"


def with_header(key: SigningKey, **extra: Any) -> str:
    """A token signed by `key` whose header carries `extra` too."""
    return jwt.encode(claims(), key.private_key, algorithm=key.alg,
                      headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE, **extra})


@dataclass(frozen=True, slots=True)
class Attack:
    name: str
    make: Callable[[SigningKey], str]
    rule: str


ATTACKS = [
    Attack("alg none", lambda k: raw({"alg": "none", "kid": k.kid}, claims()), "alg_none"),
    Attack("alg None, signed", lambda k: raw({"alg": "None", "kid": k.kid}, claims(), b"x"),
           "alg_none"),
    Attack("no alg", lambda k: raw({"kid": k.kid}, claims(), b"x"), "malformed"),
    Attack("alg not a string", lambda k: raw({"alg": ["EdDSA"], "kid": k.kid}, claims(), b"x"),
           "malformed"),
    Attack("alg NONE", lambda k: raw({"alg": "NONE", "kid": k.kid}, claims()), "alg_none"),
    Attack("HS256 with the public key as secret", hs256_with_public_key,
           "algorithm_not_allowed"),
    Attack("unknown kid", lambda k: sign(k, kid="not-a-key"), "unknown_kid"),
    Attack("no kid", lambda k: sign(k, kid=None), "missing_kid"),
    Attack("kid not a string", lambda k: raw({"alg": k.alg, "kid": 7}, claims(), b"x"),
           "missing_kid"),
    Attack("tampered payload", lambda k: tamper_payload(sign(k)), "bad_signature"),
    Attack("tampered signature", lambda k: tamper_signature(sign(k)), "bad_signature"),
    Attack("expired", lambda k: sign(k, claims(exp=int(time.time()) - 120)), "expired"),
    Attack("nbf in the future", lambda k: sign(k, claims(nbf=int(time.time()) + 120)),
           "not_yet_valid"),
    Attack("iat in the future", lambda k: sign(k, claims(iat=int(time.time()) + 120)),
           "not_yet_valid"),
    Attack("wrong issuer", lambda k: sign(k, claims(iss="https://evil.test")), "wrong_issuer"),
    Attack("wrong audience", lambda k: sign(k, claims(aud="billing")), "wrong_audience"),
    *[Attack(f"no {c}", lambda k, c=c: sign(k, claims(**{c: None})), "missing_claim")
      for c in ("exp", "iat", "iss", "aud", "sub", "kind")],
    # Signed by the issuer's own key, but not an access token (RFC 9068 typ): an ID token, a
    # refresh or logout token of an OpenID provider, or any JWT a future feature signs.
    Attack("typ JWT", lambda k: sign(k, typ="JWT"), "wrong_token_type"),
    Attack("no typ", lambda k: sign(k, typ=None), "wrong_token_type"),
    Attack("typ of a refresh token", lambda k: sign(k, typ="refresh+jwt"), "wrong_token_type"),
    Attack("typ not a string", lambda k: sign(k, typ=["at+jwt"]), "wrong_token_type"),
    Attack("one part", lambda k: "abc", "malformed"),
    Attack("two parts", lambda k: ".".join(sign(k).split(".")[:2]), "malformed"),
    Attack("four parts", lambda k: sign(k) + ".x", "malformed"),
    Attack("header not base64", lambda k: "!!!." + sign(k).split(".", 1)[1], "malformed"),
    Attack("header not JSON", lambda k: b64(b"{nope") + "." + sign(k).split(".", 1)[1],
           "malformed"),
    Attack("header a JSON list", lambda k: b64(b"[1]") + "." + sign(k).split(".", 1)[1],
           "malformed"),
    Attack("payload not JSON", lambda k: signed_bytes(k, b"{not json"), "malformed"),
    Attack("payload a JSON list", lambda k: signed_bytes(k, b"[1, 2]"), "malformed"),
    Attack("empty signature", lambda k: sign(k).rsplit(".", 1)[0] + ".", "malformed"),
    Attack("signed by a key of another type", other_type_key_same_kid,
           "key_algorithm_mismatch"),
    Attack("signature cut short", lambda k: short_signature(sign(k)), "bad_signature"),
    Attack("signature spelled non-canonically", lambda k: non_canonical_signature(sign(k)),
           "malformed"),
    Attack("signature with padding", lambda k: sign(k) + "==", "malformed"),
    Attack("a critical header extension", lambda k: with_header(k, crit=["exp"], exp=1),
           "malformed"),
    Attack("exp not a number", lambda k: sign(k, claims(exp="tomorrow")), "invalid_claim"),
    Attack("exp true", lambda k: sign(k, claims(exp=True)), "invalid_claim"),
    Attack("exp infinite", lambda k: signed_bytes(
        k, json.dumps(claims(exp=float("inf"))).encode()), "invalid_claim"),
    Attack("nbf not a number", lambda k: sign(k, claims(nbf="now")), "invalid_claim"),
    Attack("aud a number", lambda k: sign(k, claims(aud=7)), "invalid_claim"),
    Attack("aud a list with a number", lambda k: sign(k, claims(aud=[AUDIENCE, 7])),
           "invalid_claim"),
    Attack("sub empty", lambda k: sign(k, claims(sub="")), "invalid_claim"),
    Attack("kid not ASCII", lambda k: sign(k, kid="k\u00e9y-\U0001f4a5\"\\"), "unknown_kid"),
    Attack("alg not ASCII", lambda k: raw({"alg": "\U0001f4a5", "kid": k.kid}, claims(), b"x"),
           "algorithm_not_allowed"),
    Attack("huge", lambda k: sign(k, claims(pad="x" * 10_000)), "token_too_large"),
    Attack("roles not a list", lambda k: sign(k, claims(roles="admin")), "invalid_claim"),
    Attack("unknown kind", lambda k: sign(k, claims(kind="root")), "invalid_claim"),
    Attack("sub not a string", lambda k: sign(k, claims(sub=42)), "invalid_claim"),
]
