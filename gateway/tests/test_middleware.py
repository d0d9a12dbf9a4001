"""`EdgeMiddleware`: the ids, the log binding and the metrics of a service's three
middlewares, in one, on a fresh metrics registry."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Message

from core import correlation
from core.http import context
from core.logs import JsonFormatter
from core.metrics import HttpMetrics, Metrics
from gateway.middleware import EdgeMiddleware


class Route:
    prefix = "/api/x"


def http(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/api/x/1", "headers": headers}


def line() -> str:
    """A log line as written now."""
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "hello", None, None)
    return json.dumps(json.loads(JsonFormatter().format(record)))


def count(metrics: Metrics, status: str, route: str = "/api/x") -> float:
    return metrics.registry.get_sample_value(
        "kfm_http_requests_total", {"method": "GET", "route": route, "status": status}) or 0.0


async def test_ids_are_bound_echoed_in_place_of_the_apps_and_the_answer_counted() -> None:
    metrics = Metrics(CollectorRegistry())
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = Route()
        current, ids = context.current(), correlation.current()
        seen["ids"] = (current and current.request_id, ids and ids.correlation_id)
        seen["log"] = line()
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"x-request-id", b"upstream's"), (b"a", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = EdgeMiddleware(app, HttpMetrics(app, metrics))
    await middleware(http([(b"x-request-id", b"r-1"), (b"authorization", b"Bearer t")]),
                     None, send)  # type: ignore[arg-type]
    assert seen["ids"] == ("r-1", "r-1")  # no correlation id given: the request's
    assert "/api/x/1" in seen["log"]  # a line logged meanwhile names the request
    assert sent[0]["headers"] == [(b"a", b"1"), (b"x-request-id", b"r-1"),
                                  (b"x-correlation-id", b"r-1")]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}
    assert count(metrics, "201") == 1
    assert context.current() is None and correlation.current() is None  # unbound after
    assert "/api/x/1" not in line()


async def test_an_app_that_raises_counts_as_a_500_with_insane_ids_replaced() -> None:
    metrics = Metrics(CollectorRegistry())
    seen: list[str] = []

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        current = context.current()
        assert current is not None
        seen.append(current.request_id)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await EdgeMiddleware(broken, HttpMetrics(broken, metrics))(
            http([(b"x-request-id", b"a\nb")]), None, None)  # type: ignore[arg-type]
    assert len(seen[0]) == 32 and seen[0] != "a\nb"
    assert count(metrics, "500", route="<unmatched>") == 1
    assert context.current() is None


async def test_lifespan_and_websockets_pass_through_untouched() -> None:
    scopes: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope["type"])
        assert context.current() is None

    middleware = EdgeMiddleware(app, HttpMetrics(app, Metrics(CollectorRegistry())))
    for kind in ("lifespan", "websocket"):
        await middleware({"type": kind}, None, None)  # type: ignore[arg-type]
    assert scopes == ["lifespan", "websocket"]
