"""Whose identity a call to another service carries: the user's, forwarded, or the service's own.

The client asks an `Auth` for the `Authorization` header of each call. A route acting for its
user forwards the user's token (`ForwardCaller`: the other service checks the same
permissions); background work, or a call the user may not make directly, uses the service's
own token (`ServiceToken`, from any `TokenProvider`, e.g. client credentials).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from core.http import context

TokenProvider = Callable[[], Awaitable[str]]
"""Returns a current access token of this service (caching and refresh are its business)."""


class Auth(Protocol):
    async def authorization(self) -> str | None:
        """The `Authorization` header value for the next call, or None for none."""
        ...


class NoAuth:
    """Send no `Authorization` header."""

    async def authorization(self) -> str | None:
        return None


class ForwardCaller:
    """Forward the incoming request's `Authorization` header as received (none outside a
    request, or when the caller sent none)."""

    async def authorization(self) -> str | None:
        current = context.current()
        return current.authorization if current is not None else None


class ServiceToken:
    """`Bearer <token>` from this service's own `TokenProvider`."""

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider

    async def authorization(self) -> str | None:
        return f"Bearer {await self._provider()}"


class CallerOrService:
    """The caller's token when there is one, else the service's own."""

    def __init__(self, provider: TokenProvider) -> None:
        self._service = ServiceToken(provider)

    async def authorization(self) -> str | None:
        return await ForwardCaller().authorization() or await self._service.authorization()
