"""`TokenVerifier`: a bearer token in, a Principal out, or TokenRejected naming the broken rule.

The checks run cheapest first, before any signature work: size, shape, header, algorithm
allow-list, kid, the key's own algorithm; then PyJWT verifies the signature with the key
parsed once per kid (never the JWKS per request) and the claims (`exp`, `iat`, `nbf`, `iss`,
`aud`, `sub` required or checked, with a small leeway).

Refused by construction: `alg=none` and every HMAC algorithm (no secret key is ever accepted,
so a token "signed" with the public key as an HMAC secret has nowhere to go), a token whose
header names another algorithm than the key's (`alg` is bound to the kid, RFC 8725 §3.1).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from core.security.errors import Rule, SecurityError, TokenRejected
from core.security.types import KINDS, KeySource, Kind, Principal

ASYMMETRIC = frozenset({"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512",
                        "PS256", "PS384", "PS512"})
DEFAULT_ALGORITHMS = ("EdDSA", "ES256", "RS256")
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
MAX_TOKEN_BYTES = 8192
"""Far above a real access token (~0.5-2 KB), far below what would cost us to parse."""

_FAILURES: tuple[tuple[type[jwt.PyJWTError], Rule], ...] = (
    (jwt.InvalidSignatureError, "bad_signature"),  # before DecodeError: it is one
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidIssuedAtError, "invalid_claim"),
    (InvalidSubjectError, "invalid_claim"),
    (InvalidJTIError, "invalid_claim"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt.DecodeError, "malformed"),
)


class TokenVerifier:
    """Verifies access tokens of one issuer for one audience (or any of several).

    `algorithms` is the allow-list; only asymmetric algorithms may be on it. Stateless apart
    from its key source: safe to share between all requests of a process.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str | Iterable[str],
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        leeway: float = 30.0,
        max_token_bytes: int = MAX_TOKEN_BYTES,
    ) -> None:
        unsafe = set(algorithms) - ASYMMETRIC
        if unsafe or not algorithms:
            raise SecurityError(f"algorithms must be asymmetric ones, not {sorted(unsafe)}")
        if not issuer or not audience:
            raise SecurityError("a verifier needs an issuer and an audience")
        if leeway < 0 or max_token_bytes <= 0:
            raise SecurityError("leeway must be >= 0 and max_token_bytes > 0")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience if isinstance(audience, str) else list(audience)
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self._jwt = jwt.PyJWT()
        self._options: Any = {"require": list(REQUIRED_CLAIMS), "verify_sub": True,
                              "verify_jti": True}

    async def verify(self, token: str) -> Principal:
        """The Principal the token proves, or TokenRejected (or KeysUnavailable, a 503)."""
        if len(token) > self.max_token_bytes:
            raise TokenRejected("token_too_large", f"token longer than {self.max_token_bytes} "
                                                   "bytes")
        parts = token.split(".")
        header = _header(parts)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenRejected("alg_none", "unsigned tokens (alg none) are refused")
        if not (parts[1] and parts[2]):
            raise TokenRejected("malformed", "the token has an empty payload or signature")
        if alg not in self.algorithms:
            raise TokenRejected("algorithm_not_allowed", f"algorithm {alg} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("missing_kid", "the token header names no key (kid)")
        key = await self.keys.get(kid)
        if key is None:
            raise TokenRejected("unknown_kid", f"no key {kid[:64]!r} at the issuer")
        if key.alg != alg:
            raise TokenRejected("key_algorithm_mismatch",
                                f"key {kid[:64]!r} is for {key.alg}, the token says {alg}")
        try:
            claims = self._jwt.decode(
                token, key.jwk, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options=self._options)
        except jwt.PyJWTError as e:
            raise _rejected(e) from e
        return principal_of(claims, token)


def principal_of(claims: dict[str, Any], token: str) -> Principal:
    """The Principal of verified claims; a claim of the wrong shape is a refused token."""
    kind = claims.get("kind", "user")
    if kind not in KINDS:
        raise TokenRejected("invalid_claim", "kind must be user or service")
    return Principal(
        subject=claims["sub"],
        kind=_kind(kind),
        roles=_strings(claims, "roles"),
        permissions=_strings(claims, "permissions"),
        token=token,
        claims=claims,
    )


def _kind(kind: str) -> Kind:
    return "service" if kind == "service" else "user"


def _strings(claims: dict[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenRejected("invalid_claim", f"{name} must be a list of strings")
    return frozenset(value)


def _header(parts: list[str]) -> dict[str, Any]:
    """The JOSE header, read strictly: three ASCII segments, base64url, a JSON object."""
    if len(parts) != 3 or not parts[0].isascii():
        raise TokenRejected("malformed", "a token is three base64url parts")
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError) as e:
        raise TokenRejected("malformed", "the token header is not base64url JSON") from e
    if not isinstance(header, dict):
        raise TokenRejected("malformed", "the token header is not a JSON object")
    return header


def _rejected(error: jwt.PyJWTError) -> TokenRejected:
    for kind, rule in _FAILURES:
        if isinstance(error, kind):
            return TokenRejected(rule, str(error))
    return TokenRejected("malformed", str(error))
