"""`GET /asyncapi.json`: the service's AsyncAPI document, made at the first request (the
event schemas are pydantic's to generate: a service that is never asked pays nothing) and
kept, since what a service sends and receives is fixed once it is built. Public, like
`/openapi.json`, and not in the OpenAPI document."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from core.asyncapi.document import Json, asyncapi_document
from core.asyncapi.topology import Topology

ASYNCAPI_URL = "/asyncapi.json"


def document_maker(topology: Topology, **info: Any) -> Callable[[], Json]:
    """A function returning `topology`'s document (made once; callers must not change it)."""
    return functools.cache(functools.partial(asyncapi_document, topology, **info))


def asyncapi_routes(document: Callable[[], Json], url: str = ASYNCAPI_URL) -> APIRouter:
    router = APIRouter()

    @router.get(url, include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        return JSONResponse(document())

    return router
