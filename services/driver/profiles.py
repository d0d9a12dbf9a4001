"""Onboarding's synchronous call: does the user service hold a profile for this user?

The call goes by service name through the platform client (`core.http.ServiceClient`: the
registry, a breaker per instance, a bulkhead and retries), with the caller's own token
forwarded, under a short timeout: a user waiting on a form should get "try again" in seconds,
not hang. What the client raises when no usable answer came (an `UpstreamError`:
`UpstreamUnavailableError` 503, `UpstreamTimeoutError` 504, `UpstreamBadResponseError` 502)
reaches the client as is, with its clear message (and `Retry-After` once the breaker is open).
"""

from __future__ import annotations

from urllib.parse import quote

from core.bases import FieldError, ValidationError
from core.http import ServiceClient, UpstreamRejectedError


class ProfileCheck:
    """`await check(user_id)` returns when the profile exists and raises otherwise."""

    def __init__(self, services: ServiceClient, service: str, timeout: float) -> None:
        self._services = services
        self._service = service
        self._timeout = timeout

    async def __call__(self, user_id: str) -> None:
        response = await self._services.get(
            self._service, f"/users/{quote(user_id, safe='')}",
            timeout=self._timeout, deadline=2 * self._timeout)
        if response.status_code == 404:
            raise ValidationError(
                "register a profile first: the user service has no profile for this user",
                fields=[FieldError("user", "no profile in the user service", "no_profile")])
        if response.status_code >= 400:  # 401/403/422: this service, not the caller, erred
            raise UpstreamRejectedError(self._service, response)
