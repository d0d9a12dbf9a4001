"""Who is at the console: the access token in an HttpOnly cookie, checked on every request.

The browser never holds the token where a script can read it: `console_token` is HttpOnly,
SameSite=Strict (no other site's page can make the browser send it), Secure when the console
is served over https, and scoped to `/console`. Every POST also carries a CSRF token: an HMAC
of the session's access token (so it is per session, needs no server state, and works with
any number of gateway processes), sent as a form field or the `X-CSRF-Token` header htmx adds.
Before login, the login form's own token is a random value in a short-lived cookie (double
submit), so no other site can log a browser in under its own account.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request

from core.security import Principal, TokenRejectedError, TokenVerifier
from gateway.client_address import TrustedProxies

PREFIX = "/console"
TOKEN_COOKIE = "console_token"
LOGIN_COOKIE = "console_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class NotLoggedInError(Exception):
    """No valid session: the console answers with its login page (a redirect)."""


class ForbiddenError(Exception):
    """A valid session without the console's permission, or a POST without its CSRF token."""


@dataclass(frozen=True, slots=True)
class Operator:
    """The logged-in admin, and the CSRF token of their session."""

    principal: Principal
    csrf: str

    @property
    def name(self) -> str:
        email = self.principal.claims.get("email")
        return str(email) if email else self.principal.subject


def csrf_for(token: str) -> str:
    """The session's CSRF token: only someone who holds the access token can compute it."""
    return hmac.new(token.encode(), b"kfm-console-csrf", hashlib.sha256).hexdigest()


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def secure(request: Request, trusted: TrustedProxies) -> bool:
    """Whether the browser reached us over https (the cookie is then Secure): directly, or
    through a trusted proxy (`GATEWAY_TRUSTED_PROXIES`) that says so in X-Forwarded-Proto,
    as a TLS-terminating load balancer does."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else ""
    seen = trusted.trusts(peer)
    proto = request.headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
    return seen is not None and seen[1] and proto == "https"


async def operator(request: Request, verifier: TokenVerifier, permission: str) -> Operator:
    """The request's operator, or NotLoggedInError / ForbiddenError. An expired or revoked
    key's token is the same as none: log in again."""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise NotLoggedInError
    try:
        principal = await verifier.verify(token)
    except TokenRejectedError as exc:
        raise NotLoggedInError from exc  # expired, or its key withdrawn: log in again
    if not principal.has_permission(permission):
        raise ForbiddenError(f"your account lacks the {permission} permission")
    return Operator(principal, csrf_for(token))


async def check_csrf(request: Request, expected: str) -> None:
    """A POST must carry `expected` in the header or the form (compared in constant time)."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, expected):
        raise ForbiddenError("the form's CSRF token is missing or wrong: reload the page")
