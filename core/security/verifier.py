"""`TokenVerifier`: a bearer token in, a Principal out, or TokenRejectedError naming the broken
rule.

The checks run cheapest first and refuse before any signature work: size, shape, header,
algorithm allow-list, kid, the key's own algorithm. Then the signature (PyJWT's algorithm for
the key, parsed once per kid, never the JWKS per request), the token type (`typ: at+jwt`,
RFC 9068: another kind of token signed by the same key is refused), and only then is the
payload read: `exp`, `iat`, `iss`, `aud`, `sub`, `kind` required, `nbf` honoured, with a
small leeway.

The token is split and decoded here rather than by `jwt.decode`: PyJWT 2.15 checks the
base64url alphabet one character at a time in Python, which cost more than the RSA signature
itself (bench/jwt.py); a regex does the same check in C. The rules are the same, and stricter
where it is cheap (a `crit` header, non-finite times).

Refused by construction: `alg=none` and every HMAC algorithm (no secret key is ever accepted,
so a token "signed" with the public key as an HMAC secret has nowhere to go), and a token whose
header names another algorithm than the key's (`alg` is bound to the kid, RFC 8725 §3.1).
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from core.security.errors import SecurityError, TokenRejectedError
from core.security.types import ACCESS_TOKEN_TYPE, KINDS, KeySource, Kind, Principal

ASYMMETRIC = frozenset({"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512",
                        "PS256", "PS384", "PS512"})
DEFAULT_ALGORITHMS = ("EdDSA", "ES256", "RS256")
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "kind")
MAX_TOKEN_BYTES = 8192
"""Far above a real access token (~0.5-2 KB), far below what would cost us to parse."""

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        unsafe = set(algorithms) - ASYMMETRIC
        if unsafe or not algorithms:
            raise SecurityError(f"algorithms must be asymmetric ones, not {sorted(unsafe)}")
        audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not issuer or not audiences or "" in audiences:
            raise SecurityError("a verifier needs an issuer and an audience")
        if leeway < 0 or max_token_bytes <= 0:
            raise SecurityError("leeway must be >= 0 and max_token_bytes > 0")
        self.keys = keys
        self.issuer = issuer
        self.audiences = audiences
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self.clock = clock

    async def verify(self, token: str) -> Principal:
        """The Principal the token proves, or TokenRejectedError (KeysUnavailableError: 503)."""
        if len(token) > self.max_token_bytes:
            raise TokenRejectedError("token_too_large",
                                     f"token longer than {self.max_token_bytes} bytes")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenRejectedError("malformed", "a token is three base64url parts")
        header = _json_object(parts[0], "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise TokenRejectedError("malformed", "the token header names no algorithm (alg)")
        if alg.lower() == "none":
            raise TokenRejectedError("alg_none", "unsigned tokens (alg none) are refused")
        if alg not in self.algorithms:
            raise TokenRejectedError("algorithm_not_allowed",
                                     f"algorithm {alg[:32]!r} is not allowed")
        if "crit" in header:
            raise TokenRejectedError("malformed", "no critical header extension is supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejectedError("missing_kid", "the token header names no key (kid)")
        key = await self.keys.get(kid)
        if key is None:
            raise TokenRejectedError("unknown_kid", f"no key {kid[:64]!r} at the issuer")
        if key.alg != alg:
            raise TokenRejectedError(
                "key_algorithm_mismatch",
                f"key {kid[:64]!r} is for {key.alg}, the token says {alg[:32]!r}")
        signature = _decode(parts[2], "signature")
        if not signature:
            raise TokenRejectedError("malformed", "the token has no signature")
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        if not key.jwk.Algorithm.verify(signing_input, key.jwk.key, signature):
            raise TokenRejectedError("bad_signature", "the signature does not match")
        if not _is_access_token(header.get("typ")):  # signed by our key, but not for this
            raise TokenRejectedError("wrong_token_type",
                                     f"not an access token (typ must be {ACCESS_TOKEN_TYPE})")
        claims = _json_object(parts[1], "payload")
        self._check_claims(claims)
        return principal_of(claims, token)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        for name in REQUIRED_CLAIMS:
            if name not in claims:
                raise TokenRejectedError("missing_claim", f'the token has no "{name}" claim')
        now = self.clock()
        if _time(claims, "exp") <= now - self.leeway:
            raise TokenRejectedError("expired", "the token has expired")
        if _time(claims, "iat") > now + self.leeway:
            raise TokenRejectedError("not_yet_valid", "the token is issued in the future (iat)")
        if "nbf" in claims and _time(claims, "nbf") > now + self.leeway:
            raise TokenRejectedError("not_yet_valid", "the token is not valid yet (nbf)")
        if claims["iss"] != self.issuer:
            raise TokenRejectedError("wrong_issuer", "the token is from another issuer")
        if self.audiences.isdisjoint(_audiences(claims["aud"])):
            raise TokenRejectedError("wrong_audience", "the token is for another audience")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise TokenRejectedError("invalid_claim", "sub must be a non-empty string")
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise TokenRejectedError("invalid_claim", "jti must be a string")


def principal_of(claims: dict[str, Any], token: str) -> Principal:
    """The Principal of verified claims; a claim of the wrong shape is a refused token."""
    kind = claims.get("kind")
    if kind not in KINDS:
        raise TokenRejectedError("invalid_claim", "kind must be user or service")
    return Principal(
        subject=claims["sub"],
        kind=_kind(kind),
        roles=_strings(claims, "roles"),
        permissions=_strings(claims, "permissions"),
        token=token,
        claims=claims,
    )


def _is_access_token(typ: Any) -> bool:
    """`at+jwt`, or its full media type `application/at+jwt` (RFC 9068 §2.1), in any case."""
    return isinstance(typ, str) and typ.lower().removeprefix("application/") == ACCESS_TOKEN_TYPE


def _kind(kind: str) -> Kind:
    return "service" if kind == "service" else "user"


def _strings(claims: dict[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenRejectedError("invalid_claim", f"{name} must be a list of strings")
    return frozenset(value)


def _time(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejectedError("invalid_claim", f"{name} must be a number of seconds")
    return value


def _audiences(aud: Any) -> list[str]:
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise TokenRejectedError("invalid_claim", "aud must be a string or a list of strings")
    return audiences


def _decode(segment: str, name: str) -> bytes:
    """Strict base64url without padding: the alphabet only, and the canonical encoding (so
    one signature has one spelling)."""
    if len(segment) % 4 == 1 or not _BASE64URL.fullmatch(segment):
        raise TokenRejectedError("malformed", f"the token {name} is not base64url")
    # The alphabet and length checked, decoding cannot fail; extra padding is ignored.
    decoded = base64.urlsafe_b64decode(segment + "==")
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode():
        raise TokenRejectedError("malformed", f"the token {name} is not canonical base64url")
    return decoded


def _json_object(segment: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(_decode(segment, name))
    except (ValueError, RecursionError) as e:
        raise TokenRejectedError("malformed", f"the token {name} is not JSON") from e
    if not isinstance(value, dict):
        raise TokenRejectedError("malformed", f"the token {name} is not a JSON object")
    return value
