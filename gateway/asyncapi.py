"""`GET /asyncapi.json` at the gateway: one AsyncAPI document merged from every routed
service's own (`core.asyncapi.merge_asyncapi`), fetched and kept as the OpenAPI one is
(`OpenApiCache`: concurrently, each within its timeout, a service away keeps its last good
document or is listed in `info["x-unavailable-services"]`, remade every `ttl` seconds and on
a route table reload). Public, like `/openapi.json`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from core.asyncapi import ASYNCAPI_URL, merge_asyncapi
from gateway.openapi import OpenApiCache, TableLike
from gateway.openapi.merge import Json


class AsyncApiCache(OpenApiCache):
    """`OpenApiCache`, merging AsyncAPI documents: events are not routed, so nothing of the
    route table but its services is used."""

    kind = "AsyncAPI"

    def _merge(self, table: TableLike, good: Mapping[str, Mapping[str, Any]],
               unavailable: list[str]) -> Json:
        return merge_asyncapi(good, title=self.title, version=self.version,
                              unavailable=unavailable)

    def _refuse(self, spec: object) -> str | None:
        if (not isinstance(spec, Mapping) or not isinstance(spec.get("asyncapi"), str)
                or not isinstance(spec.get("channels", {}), Mapping)):
            return "not an AsyncAPI document"
        return None


def asyncapi_routes(cache: AsyncApiCache) -> APIRouter:
    router = APIRouter()

    @router.get(ASYNCAPI_URL, include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        return JSONResponse(await cache.document())

    return router
