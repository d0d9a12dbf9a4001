"""The errors of core.security, each mapped to HTTP once through core.bases.errors.

A refused token is always a 401 naming the rule it broke (`TokenRejectedError.rule`), in the
body and in `WWW-Authenticate` (RFC 6750); it is never a 500. A request that sent no
credentials gets a bare `Bearer` challenge: RFC 6750 §3.1 leaves the error code out when none
were sent. A verifier that cannot get keys at all is a 503 (`KeysUnavailableError`): the token
may be perfectly good, and a 401 would send a well-behaved client to log in again, in a storm,
for an outage that is ours.
"""

from __future__ import annotations

from typing import Literal

from core.bases.errors import AppError, FieldError, UnauthorizedError

Rule = Literal[
    "missing_token",
    "token_too_large",
    "malformed",
    "alg_none",
    "algorithm_not_allowed",
    "missing_kid",
    "unknown_kid",
    "key_algorithm_mismatch",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "invalid_claim",
    "wrong_token_type",
]
"""Which rule a refused token broke; stable strings a client or a test can match."""


class SecurityError(Exception):
    """Root of the errors of core.security that are not HTTP answers themselves."""


class TokenRejectedError(UnauthorizedError):
    """A bearer token was refused; `rule` says which check failed."""

    code = "invalid_token"

    def __init__(self, rule: Rule, description: str) -> None:
        self.rule: Rule = rule
        self.description = description
        challenge = "Bearer" if rule == "missing_token" else (
            f'Bearer error="invalid_token", error_description="{_quoted(description)}"')
        super().__init__(
            f"{rule}: {description}",
            fields=[FieldError("authorization", description, rule, "header")],
            headers={"WWW-Authenticate": challenge},
        )


class KeysUnavailableError(AppError):
    """No verification keys could be had (the JWKS never answered): answered as 503."""

    status_code = 503
    code = "keys_unavailable"
    default_message = "Token verification keys are unavailable; retry shortly"


class ServiceTokenError(SecurityError, AppError):
    """This service has no valid token of its own and the auth service did not give one.

    A route that needed it answers 503 (the cause is logged, never sent to the client)."""

    status_code = 503
    code = "service_identity_unavailable"


def _quoted(text: str) -> str:
    """A quoted-string of RFC 7230 may not hold `"` or `\\` unescaped, nor control characters;
    and a header is Latin-1 at best: the description quotes the attacker's header (kid, alg),
    so anything but printable ASCII becomes `?` rather than an encoding error (a 500)."""
    clean = "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text)
    return clean.replace("\\", "\\\\").replace('"', "'")
