"""OpenApiCache (fetching, keeping, sharing) and the docs routes that serve it."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from gateway.openapi import OpenApiCache, docs_routes, merged_openapi
from gateway.tests.openapi_support import Json, Route, RouteTable, op, spec, table

TABLE = table(Route("a", "/api/a", "a", "/a"), Route("b", "/api/b", "b", "/b"),
              Route("old", "/api/old", "legacy"))


def spec_of(service: str, version: str = "1") -> Json:
    return spec(service, {f"/{service}": {"get": op(f"{service}_{version}")}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Services:
    """A fetch whose answers the test sets: a document, or an exception to raise; counts
    calls; `gate` (when set) holds every fetch until it is opened."""

    def __init__(self, **answers: Json | Exception) -> None:
        self.answers: dict[str, Json | Exception] = dict(answers)
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None

    async def __call__(self, service: str) -> Mapping[str, Any]:
        self.calls[service] += 1
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers[service]
        if isinstance(answer, Exception):
            raise answer
        return answer


def op_ids(doc: Json) -> set[str]:
    return {o["operationId"] for item in doc["paths"].values() for o in item.values()
            if isinstance(o, dict) and "operationId" in o}


async def test_kept_for_ttl_then_fetched_again() -> None:
    services, clock = Services(a=spec_of("a"), b=spec_of("b")), Clock()
    cache = OpenApiCache(lambda: TABLE, services, ttl=30.0, clock=clock)
    first = await cache.document()
    assert {"a_1", "b_1"} <= op_ids(first)
    assert services.calls == {"a": 1, "b": 1}  # never the legacy upstream
    services.answers["a"] = spec_of("a", "2")
    clock.now += 29.9
    assert await cache.document() is first
    assert services.calls == {"a": 1, "b": 1}
    clock.now += 0.2
    assert {"a_2", "b_1"} <= op_ids(await cache.document())
    assert services.calls == {"a": 2, "b": 2}


async def test_a_new_table_is_merged_at_once() -> None:
    services = Services(a=spec_of("a"), b=spec_of("b"), c=spec_of("c"))
    current = [TABLE]
    cache = OpenApiCache(lambda: current[0], services, ttl=3600.0, clock=Clock())
    assert "/api/c" not in (await cache.document())["paths"]
    current[0] = RouteTable((*TABLE.routes, Route("c", "/api/c", "c", "/c")))
    assert "/api/c" in (await cache.document())["paths"]
    assert services.calls == {"a": 2, "b": 2, "c": 1}


async def test_a_failing_service_keeps_its_last_document(
        caplog: pytest.LogCaptureFixture) -> None:
    services, clock = Services(a=spec_of("a"), b=spec_of("b")), Clock()
    cache = OpenApiCache(lambda: TABLE, services, ttl=30.0, retry_after=5.0, clock=clock)
    await cache.document()
    services.answers["a"] = ConnectionError("a is down")
    clock.now += 31
    with caplog.at_level(logging.WARNING, logger="gateway.openapi.cache"):
        doc = await cache.document()
    assert "a_1" in op_ids(doc) and "x-unavailable-services" not in doc["info"]
    assert "the OpenAPI document of a is unavailable (ConnectionError: a is down); " \
           "keeping its last one" in caplog.text
    # after a failure it is tried again soon, not after the whole ttl
    services.answers["a"] = spec_of("a", "2")
    clock.now += 5.1
    assert "a_2" in op_ids(await cache.document())
    assert services.calls["a"] == 3


async def test_a_service_never_fetched_is_listed_and_the_rest_still_served() -> None:
    services, clock = Services(a=RuntimeError("boom"), b=spec_of("b")), Clock()
    cache = OpenApiCache(lambda: TABLE, services, ttl=30.0, retry_after=5.0, clock=clock)
    doc = await cache.document()
    assert doc["info"]["x-unavailable-services"] == ["a"]
    assert "/api/b" in doc["paths"] and "/api/a" not in doc["paths"]
    clock.now += 4.9
    assert await cache.document() is doc
    services.answers["a"] = spec_of("a")
    clock.now += 0.2
    doc = await cache.document()
    assert "/api/a" in doc["paths"] and "x-unavailable-services" not in doc["info"]


async def test_a_hung_service_or_a_bad_answer_counts_as_down() -> None:
    services = Services(a=spec_of("a"), b={"openapi": "3.1.0", "detail": "not a spec"})
    hung = asyncio.Event()

    async def fetch(service: str) -> Mapping[str, Any]:
        if service == "a":
            await hung.wait()  # never set: only the timeout ends it
        return await services(service)

    cache = OpenApiCache(lambda: TABLE, fetch, fetch_timeout=0.05, clock=Clock())
    doc = await cache.document()
    assert doc["info"]["x-unavailable-services"] == ["a", "b"]
    assert set(doc["paths"]) == {"/health/live", "/health/ready"}


async def test_concurrent_callers_share_one_fetch() -> None:
    services = Services(a=spec_of("a"), b=spec_of("b"))
    services.gate = asyncio.Event()
    cache = OpenApiCache(lambda: TABLE, services, clock=Clock())
    callers = [asyncio.create_task(cache.document()) for _ in range(20)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    services.gate.set()
    docs = await asyncio.gather(*callers)
    assert all(doc is docs[0] for doc in docs)
    assert services.calls == {"a": 1, "b": 1}


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh() -> None:
    services = Services(a=spec_of("a"), b=spec_of("b"))
    services.gate = asyncio.Event()
    cache = OpenApiCache(lambda: TABLE, services, clock=Clock())
    first = asyncio.create_task(cache.document())
    second = asyncio.create_task(cache.document())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    services.gate.set()
    assert "/api/a" in (await second)["paths"]
    assert first.cancelled()
    assert services.calls == {"a": 1, "b": 1}


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"ttl": -1.0}, {"fetch_timeout": 0.0}, {"retry_after": -1.0}):
        with pytest.raises(ValueError, match="ttl and retry_after must be >= 0"):
            OpenApiCache(lambda: TABLE, Services(), **kwargs)  # type: ignore[arg-type]


async def test_merged_openapi_fetches_once_without_keeping() -> None:
    services = Services(a=spec_of("a"), b=ConnectionError("down"))
    doc = await merged_openapi(TABLE, services, title="T", version="2")
    assert doc["info"]["title"] == "T" and doc["info"]["x-unavailable-services"] == ["b"]


async def test_docs_routes_serve_the_document_and_swagger_ui() -> None:
    services = Services(a=spec_of("a"), b=spec_of("b"))
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(docs_routes(OpenApiCache(lambda: TABLE, services, title="Platform API",
                                                version="3", clock=Clock())))
    async with AsyncClient(transport=ASGITransport(app), base_url="http://gw") as client:
        document = await client.get("/openapi.json")
        docs = await client.get("/docs")
        missing = await client.get("/redoc")
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/json"
    assert document.json()["info"]["title"] == "Platform API"
    assert {"/api/a", "/api/b", "/health/live"} <= set(document.json()["paths"])
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in docs.text and "url: '/openapi.json'" in docs.text
    assert "<title>Platform API - docs</title>" in docs.text
    assert missing.status_code == 404
    # the docs routes are not described in the document they serve
    assert not {"/openapi.json", "/docs"} & set(document.json()["paths"])
    assert app.openapi()["paths"] == {}
