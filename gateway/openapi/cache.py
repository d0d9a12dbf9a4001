"""Fetching the services' documents, keeping the merge for a while, and serving it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from core.http import swagger_ui_routes
from gateway.openapi.merge import LEGACY, Json, TableLike, merge_openapi

log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[Mapping[str, Any]]]
"""A service's own document (`GET /openapi.json` on one of its instances); raises when it
cannot be had."""


class OpenApiCache:
    """The merged document, remade at most every `ttl` seconds and whenever the route table
    object changes (a reload).

    Every routed service's document is fetched concurrently, each within `fetch_timeout`. A
    service that cannot be fetched keeps its last good document; one never fetched is left
    out and listed in `info["x-unavailable-services"]`. After any failure the document is
    remade after `retry_after` rather than `ttl`. Concurrent callers share one refresh, and
    a caller cancelled while waiting does not cancel it. Use it from one event loop.
    """

    def __init__(self, table_getter: Callable[[], TableLike], fetch: Fetch,
                 ttl: float = 30.0, *, title: str = "API gateway", version: str = "",
                 own: Mapping[str, Any] | None = None, fetch_timeout: float = 5.0,
                 retry_after: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        if ttl < 0 or retry_after < 0 or fetch_timeout <= 0:
            raise ValueError("ttl and retry_after must be >= 0 and fetch_timeout > 0")
        self._table_getter = table_getter
        self._fetch = fetch
        self.ttl = ttl
        self.title = title
        self.version = version
        self._own = own
        self._fetch_timeout = fetch_timeout
        self._retry_after = retry_after
        self._clock = clock
        self._good: dict[str, Mapping[str, Any]] = {}
        self._document: Json | None = None
        self._made_for: TableLike | None = None
        self._expires = 0.0
        self._refresh: asyncio.Task[Json] | None = None
        self._refreshing_for: TableLike | None = None

    kind = "OpenAPI"

    async def document(self) -> Json:
        """The merged document (shared between callers: do not change it)."""
        table = self._table_getter()
        if (self._document is not None and table is self._made_for
                and self._clock() < self._expires):
            return self._document
        if self._refresh is None or self._refresh.done() or self._refreshing_for is not table:
            self._refresh = asyncio.get_running_loop().create_task(
                self._remake(table), name=f"gateway:{self.kind}")
            self._refreshing_for = table
        return await asyncio.shield(self._refresh)

    async def _remake(self, table: TableLike) -> Json:
        services = list(dict.fromkeys(r.service for r in table.routes if r.service != LEGACY))
        fetched = await asyncio.gather(*(self._one(service) for service in services))
        failed = False
        good: dict[str, Mapping[str, Any]] = {}
        for service, (spec, fresh) in zip(services, fetched, strict=True):
            failed = failed or not fresh
            if spec is not None:
                good[service] = spec
        document = self._merge(table, good,
                               [service for service in services if service not in good])
        if table is self._refreshing_for:  # not overtaken by a reloaded table's refresh
            self._good = good  # services no longer routed are forgotten
            self._document, self._made_for = document, table
            self._expires = self._clock() + (self._retry_after if failed else self.ttl)
        return document

    def _merge(self, table: TableLike, good: Mapping[str, Mapping[str, Any]],
               unavailable: list[str]) -> Json:
        return merge_openapi(table, good, title=self.title, version=self.version,
                             own=self._own, unavailable=unavailable)

    def _refuse(self, spec: object) -> str | None:
        """Why `spec` is not a document of the kind merged here (None: it is)."""
        if not isinstance(spec, Mapping) or not isinstance(spec.get("paths"), Mapping):
            return "not an OpenAPI document (no paths)"
        return None

    async def _one(self, service: str) -> tuple[Mapping[str, Any] | None, bool]:
        """(the service's document, True), else (its last good one or None, False)."""
        try:
            spec = await asyncio.wait_for(self._fetch(service), self._fetch_timeout)
            if (refused := self._refuse(spec)) is not None:
                raise ValueError(refused)
        except Exception as exc:  # one service away must not take the docs page down
            last = self._good.get(service)
            log.warning("the %s document of %s is unavailable (%s: %s); %s", self.kind, service,
                        type(exc).__name__, exc,
                        "keeping its last one" if last is not None else "leaving it out")
            return last, False
        return spec, True


async def merged_openapi(table: TableLike, fetch: Fetch, *, title: str = "API gateway",
                         version: str = "") -> Json:
    """The merged document of `table`'s services, fetched now (no cache)."""
    return await OpenApiCache(lambda: table, fetch, 0.0, title=title,
                              version=version).document()


def docs_routes(cache: OpenApiCache) -> APIRouter:
    """`GET /openapi.json` (the merged document) and `GET /docs` (Swagger UI reading it),
    neither of them described in the document. The app that mounts it must not serve its
    own (`FastAPI(openapi_url=None, docs_url=None, redoc_url=None)`)."""
    router = APIRouter()

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(await cache.document())

    router.include_router(swagger_ui_routes(title=f"{cache.title} - docs"))
    return router
