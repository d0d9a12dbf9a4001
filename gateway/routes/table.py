"""The route table in memory: routes, and matching a path to one of them (on every request,
so it is a few dict look-ups). Loading and validating the file: gateway/routes/file.py; the
public face, with the reload watcher: gateway/routes/."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from core.resilience import RateLimitPolicy

LEGACY = "legacy"
"""The service name that sends a route to LEGACY_UPSTREAM_URL (the monolith)."""
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 1
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_STREAMS = 1000
DEFAULT_MAX_CLIENT_STREAMS = 8


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the table. Values are valid when it comes from `load_route_table`;
    built by hand (tests), they are taken as given."""

    name: str
    prefix: str
    service: str
    rewrite: str = ""
    methods: frozenset[str] = frozenset()
    public: bool = False
    permissions: frozenset[str] = frozenset()
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    rate_limit: RateLimitPolicy | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    """Seconds a streamed answer may go without a byte passing (upstream to client)."""
    max_streams: int = DEFAULT_MAX_STREAMS
    max_client_streams: int = DEFAULT_MAX_CLIENT_STREAMS
    """Streamed answers open at once on the route, and per client (gateway/streams.py)."""

    def upstream_path(self, path: str) -> str:
        """`path` (one this route matched) with the prefix replaced by `rewrite`."""
        rewrite = self.rewrite
        if not rewrite:
            return path
        rest = path[len(self.prefix):] if self.prefix != "/" else path
        return (rewrite + rest if rewrite != "/" else rest) or "/"


class RouteTable:
    """Routes by prefix. Immutable: a reload builds a new table, so a request holds the
    table it started with."""

    __slots__ = ("_by_prefix", "_catch_all", "_longest", "routes", "services")

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._by_prefix: dict[str, Route] = {}
        for route in self.routes:
            if self._by_prefix.setdefault(route.prefix, route) is not route:
                raise ValueError(f"two routes have the prefix {route.prefix!r}")
        self._catch_all = self._by_prefix.get("/")
        self._longest = max((len(p) for p in self._by_prefix), default=0)
        self.services: frozenset[str] = frozenset(
            r.service for r in self.routes if r.service != LEGACY)

    def match(self, path: str) -> Route | None:
        """The route with the longest prefix equal to `path` or to a run of its leading
        segments; None when none matches. Looks up at most one prefix per segment of
        the longest prefix, whatever the length of `path`."""
        by_prefix = self._by_prefix
        if len(path) <= self._longest:
            route = by_prefix.get(path)
            if route is not None:
                return route
            end = len(path)
        else:  # no prefix is that long: start at the segment boundary the longest could end on
            end = self._longest + 1
        while (end := path.rfind("/", 0, end)) > 0:
            route = by_prefix.get(path[:end])
            if route is not None:
                return route
        return self._catch_all

    def __len__(self) -> int:
        return len(self.routes)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)
