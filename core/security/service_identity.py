"""A service's own identity: a short-lived token from the auth service by OAuth2 client
credentials (RFC 6749 §4.4), cached and renewed before it expires.

`ClientCredentials.token` is a TokenProvider: the service-to-service HTTP client awaits it for
every call. It renews at `renew_at` (80 %) of the token's lifetime, so a call never carries a
token about to expire; concurrent callers share one fetch; a failed renewal while the old token
is still valid keeps the old one (logged; retried after `retry_after`); with no valid token
left, the failure is ServiceTokenError.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from core.config import Settings
from core.security.errors import SecurityError, ServiceTokenError

log = logging.getLogger(__name__)

_NO_AUTH = httpx.Auth()
"""httpx's no-op auth: the credentials travel in the form instead."""
EXPIRY_MARGIN = 5.0
"""A token this close to its expiry is no longer handed out: it could expire in flight."""


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float
    expires_at: float


class ClientCredentials:
    """Tokens for `client_id` from `token_url`; safe for concurrent use from one event loop."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        auth: Literal["basic", "form"] = "basic",
        scope: str | None = None,
        audience: str | None = None,
        http: httpx.AsyncClient | None = None,
        renew_at: float = 0.8,
        retry_after: float = 1.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew_at < 1:
            raise SecurityError("renew_at is a fraction of the lifetime, in (0, 1)")
        if not client_id or not client_secret.get_secret_value():
            raise SecurityError("client credentials need a client id and secret")
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.auth = auth
        self.scope = scope
        self.audience = audience
        self.renew_at = renew_at
        self.retry_after = retry_after
        self.timeout = timeout
        self.clock = clock
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._token: _Token | None = None
        self._fetching: asyncio.Future[_Token] | None = None
        self._failed_at: float | None = None
        self.fetches = 0
        """Token requests made so far: for metrics and tests."""

    async def __call__(self) -> str:
        return await self.token()

    async def token(self) -> str:
        """A valid bearer token for this service's own calls."""
        now = self.clock()
        current = self._token
        if current is not None and now < current.renew_at:
            return current.value
        if (current is not None and now < current.expires_at - EXPIRY_MARGIN
                and self._failed_at is not None and now - self._failed_at < self.retry_after):
            return current.value  # renewal failed a moment ago; do not hammer the issuer
        try:
            return (await self._shared_fetch()).value
        except ServiceTokenError:
            if current is not None and self.clock() < current.expires_at - EXPIRY_MARGIN:
                return current.value
            raise

    def invalidate(self) -> None:
        """Forget the cached token (a callee answered 401 to it): the next call fetches."""
        self._token = None

    async def _shared_fetch(self) -> _Token:
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._fetching)

    async def _fetch(self) -> _Token:
        self.fetches += 1
        try:
            started = self.clock()
            body = await self._request()
            token = _token_of(body, started, self.renew_at)
            self._token, self._failed_at = token, None
            return token
        except ServiceTokenError as e:
            self._failed_at = self.clock()
            log.warning("service token from %s failed: %s", self.token_url, e)
            raise
        finally:
            self._fetching = None

    async def _request(self) -> Any:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        secret = self.client_secret.get_secret_value()
        auth: httpx.Auth = httpx.BasicAuth(self.client_id, secret)
        if self.auth == "form":
            form.update(client_id=self.client_id, client_secret=secret)
            auth = _NO_AUTH
        try:
            response = await self._http.post(self.token_url, data=form, auth=auth,
                                             timeout=self.timeout,
                                             headers={"accept": "application/json"})
        except httpx.HTTPError as e:
            raise ServiceTokenError(f"token endpoint unreachable: {type(e).__name__}") from e
        if response.status_code != 200:
            raise ServiceTokenError(f"token endpoint answered {response.status_code}: "
                                    f"{_oauth_error(response)}")
        try:
            return response.json()
        except ValueError as e:
            raise ServiceTokenError("token endpoint answered not JSON") from e

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()


def _token_of(body: Any, started: float, renew_at: float) -> _Token:
    """The token of a token response; its lifetime counts from when the request was sent."""
    if not isinstance(body, dict):
        raise ServiceTokenError("token response is not a JSON object")
    value, lifetime = body.get("access_token"), body.get("expires_in")
    if not isinstance(value, str) or not value:
        raise ServiceTokenError("token response has no access_token")
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise ServiceTokenError("token response is not a bearer token")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        raise ServiceTokenError("token response has no positive expires_in")
    return _Token(value, started + lifetime * renew_at, started + lifetime)


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "no OAuth error body"
    if not isinstance(body, dict):
        return "no OAuth error body"
    error, description = body.get("error", "?"), body.get("error_description")
    return f"{error}: {description}" if description else str(error)


def client_credentials_from_settings(settings: Settings, *,
                                     http: httpx.AsyncClient | None = None) -> ClientCredentials:
    """The provider `SERVICE_CLIENT_ID`, `SERVICE_CLIENT_SECRET` and `AUTH_TOKEN_URL` describe."""
    if not (settings.auth_token_url and settings.service_client_id
            and settings.service_client_secret):
        raise SecurityError("set AUTH_TOKEN_URL, SERVICE_CLIENT_ID and SERVICE_CLIENT_SECRET")
    return ClientCredentials(settings.auth_token_url, settings.service_client_id,
                             settings.service_client_secret, http=http)
