"""Authentication at the edge: a protected route's request without a valid token, or without
the route's permissions, never reaches a service.

The refusals say what the services would say for the same token (core.security.deps): the
rule a token broke as the code, the same message, the same RFC 6750 challenge; a verifier
without keys is a 503 with Retry-After, not a 401 that would send every client to log in
again for an outage that is ours. A token that verified is kept until its `exp`, while the
key that verified it is still published (`gateway.edge.token_cache`): the signature check is
the costliest step of a request at the edge, and a client repeats its token; tokens that
fail are limited per client address (`RefusedTokens`), so guessing costs the guesser a wait,
not the gateway a signature check each. Services still verify the token themselves (defence
in depth); the gateway adds who it found in `X-Authenticated-*`, after dropping whatever the
client sent under those names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import quote

from core.security import (
    RETRY_AFTER_SECONDS,
    KeysUnavailableError,
    Principal,
    TokenRejectedError,
    TokenVerifier,
)
from gateway.client_address import UNKNOWN
from gateway.edge.rate_limit import RefusedTokens
from gateway.edge.token_cache import VerifiedTokens, key_lookup
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

Headers = Sequence[tuple[bytes, bytes]]

IDENTITY_PREFIX = b"x-authenticated-"
"""Headers the gateway alone may set upstream; a client's are always dropped."""

_MISSING = TokenRejectedError("missing_token", "this route needs a bearer token")


def bearer_token(headers: Headers) -> str:
    """The token of the one `Authorization: Bearer <token>` header (scheme in any case).
    None at all is `missing_token`; another scheme, no token or two Authorization headers
    are `malformed` (a credential we cannot read is refused, not taken as anonymous)."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                raise _unauthorized(TokenRejectedError(
                    "malformed", "send one Authorization header, not several"))
            found = value
    if found is None:
        raise GatewayError(401, _MISSING.rule, _MISSING.message, {"WWW-Authenticate": "Bearer"})
    scheme, _, token = found.decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized(
            TokenRejectedError("malformed", "expected Authorization: Bearer <token>"))
    return token


def _unauthorized(rejected: TokenRejectedError) -> GatewayError:
    return GatewayError(401, rejected.rule, rejected.message, rejected.headers)


def identity_headers(principal: Principal) -> list[tuple[bytes, bytes]]:
    """`x-authenticated-subject` and `-kind` for the services behind the gateway. A subject
    that is not printable ASCII, or holds a `%`, is percent-encoded (UTF-8): no token can
    put a line break or a non-Latin-1 character into a header, nor pass for another subject's
    encoding."""
    subject = principal.subject
    if "%" in subject or not (subject.isascii() and subject.isprintable()):
        subject = quote(subject, safe="")
    return [(b"x-authenticated-subject", subject.encode("ascii")),
            (b"x-authenticated-kind", principal.kind.encode("ascii"))]


def strip_identity(headers: Headers) -> list[tuple[bytes, bytes]]:
    """`headers` without any `x-authenticated-*` (a new list; the scope's is left alone)."""
    return [header for header in headers if not header[0].startswith(IDENTITY_PREFIX)]


class GuardedRoute(Protocol):
    """What authentication reads of a route (gateway.routes.Route)."""

    @property
    def public(self) -> bool: ...

    @property
    def permissions(self) -> frozenset[str]: ...


class EdgeAuth:
    """Checks a request's bearer token and the route's permissions. One per process, shared
    by every request; it keeps tokens it verified (`VerifiedTokens`: until their `exp`, and
    at most `cache_seconds` when set; 0: none) and limits refused ones per address with
    `refused` (None: no limit)."""

    def __init__(self, verifier: TokenVerifier | None, *, cache_seconds: float | None = None,
                 cache_size: int = 10_000, refused: RefusedTokens | None = None) -> None:
        self.verifier = verifier
        self.refused = refused
        self.verified = VerifiedTokens(key_lookup(verifier.keys) if verifier else None,
                                       verifier.clock if verifier else time.time,
                                       seconds=cache_seconds, max_entries=cache_size)

    async def authenticate(self, route: GuardedRoute, headers: Headers,
                           client_ip: str = UNKNOWN) -> Principal | None:
        """The verified caller of a protected route; None for a public one, whose token is
        not even read (a stale token must not fail a login).

        Raises GatewayError: 401 for a missing or refused token (code: the rule it broke),
        403 `forbidden` naming the missing permissions, 503 when no keys can be had, 429
        `rate_limited` when `client_ip` sent too many refused tokens (then its tokens are
        not verified until Retry-After has passed, unless already verified).
        """
        if route.public:
            return None
        if self.verifier is None:
            log.error("a protected route was requested and the gateway has no token verifier "
                      "(set JWKS_URL and JWT_AUDIENCE)")
            raise GatewayError(503, "auth_unavailable",
                               "Authentication is not available at the gateway")
        token = bearer_token(headers)
        principal = self.verified.get(token)
        if principal is None:
            if self.refused is not None:
                self.refused.check(client_ip)
            principal = await self._verify(self.verifier, token, client_ip)
            self.verified.put(principal)  # no await between: the key it looks up verified it
        if not route.permissions <= principal.permissions:
            missing = ", ".join(sorted(route.permissions - principal.permissions))
            raise GatewayError(403, "forbidden", f"missing permission {missing}")
        return principal

    async def _verify(self, verifier: TokenVerifier, token: str, client_ip: str) -> Principal:
        try:
            return await verifier.verify(token)
        except TokenRejectedError as e:
            if self.refused is not None:
                await self.refused.refused(client_ip)  # 429 instead, once too many
            raise _unauthorized(e) from e
        except KeysUnavailableError as e:
            raise GatewayError(503, KeysUnavailableError.code, KeysUnavailableError.default_message,
                               {"Retry-After": str(RETRY_AFTER_SECONDS)}) from e

    # The module's functions, reachable from the instance the proxy holds too.
    identity_headers = staticmethod(identity_headers)
    strip_identity = staticmethod(strip_identity)
