"""How many long-lived answers (streams) each route and each client may hold open at once.

A stream (an answer the gateway passes on as it comes: an event stream, or a body larger
than it buffers) leaves the upstream service's bulkhead once its headers are in, so that
one client's 512 event streams cannot fill the slots every other client's short requests
need. These caps bound streams instead: per client per route (429 beyond, the client's own
doing) and per route (503 beyond, the route is at capacity). Counts are per gateway process.

Task safety: one event loop; nothing awaits between a check and its count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from gateway.errors import GatewayError

K = TypeVar("K")


class StreamRoute(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def max_streams(self) -> int: ...
    @property
    def max_client_streams(self) -> int: ...


class StreamSlots:
    """Open streams counted per route and per (route, client)."""

    def __init__(self) -> None:
        self._routes: dict[str, int] = {}
        self._clients: dict[tuple[str, str], int] = {}

    def open(self, route: str, client: str | None = None) -> int:
        """Streams open now on `route` (by `client`, when given)."""
        if client is None:
            return self._routes.get(route, 0)
        return self._clients.get((route, client), 0)

    @contextmanager
    def hold(self, route: StreamRoute, client: str) -> Iterator[None]:
        """Count one stream of `client` on `route` for the block; raise `GatewayError`
        (without counting) when either cap is reached."""
        key = (route.name, client)
        mine = self._clients.get(key, 0)
        if mine >= route.max_client_streams:
            raise GatewayError(
                429, "too_many_streams",
                f"You have {mine} streams open on this route, the most one client may hold "
                f"({route.max_client_streams}): close one first", {"Retry-After": "1"})
        total = self._routes.get(route.name, 0)
        if total >= route.max_streams:
            raise GatewayError(
                503, "streams_full",
                f"This route holds as many streams as it may ({route.max_streams}); try again "
                "shortly", {"Retry-After": "1"})
        self._clients[key] = mine + 1
        self._routes[route.name] = total + 1
        try:
            yield
        finally:
            _decrement(self._clients, key)
            _decrement(self._routes, route.name)


def _decrement(counts: dict[K, int], key: K) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]  # no entry per client that has left: the dict stays as small as now
