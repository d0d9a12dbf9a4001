"""core.metrics per family, each on a fresh CollectorRegistry: what moves each one, and
what must not (raw paths as labels, a purged record as a failure, a failed database scrape)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry
from sqlalchemy import insert

from core.db.engine import Database
from core.messaging.dispatch import RecordDispatcher
from core.messaging.dlq import InMemoryDeadLetterSink
from core.messaging.handlers import HandlerRegistry
from core.messaging.idempotency import InMemoryIdempotencyStore
from core.messaging.serialization import EventSerializer
from core.messaging.tables import messaging_tables
from core.messaging.types import Record
from core.metrics import (
    MULTIPROC_ENV,
    BreakerCollector,
    DatabaseSnapshot,
    EventMetrics,
    HttpMetrics,
    Metrics,
    count_fetches,
    count_rejections,
    prepare_multiprocess,
)
from core.resilience import BreakerConfig, CircuitBreaker, RetryPolicy
from core.saga.tables import saga_tables
from core.security import JwksClient, StaticKeySource, TokenRejectedError, TokenVerifier
from core.security.keys import SigningKey
from tests.helpers import OrderPlaced, order_registry, placed
from tests.security_support import AUDIENCE, ISSUER, claims, sign


@pytest.fixture(params=[True, False], ids=["tallied", "multiprocess"])
def metrics(request: pytest.FixtureRequest) -> Metrics:
    """Both ways the per-record families are kept: tallied in plain numbers and read at
    scrape time (one process), or prometheus-client's own (multiprocess mode)."""
    return Metrics(CollectorRegistry(), tallied=request.param)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# HTTP ------------------------------------------------------------------------------------

async def test_http_counts_per_route_template_unmatched_and_429(metrics: Metrics) -> None:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, str]:
        if order_id == "limited":
            raise HTTPException(429)
        return {"id": order_id}

    transport = httpx.ASGITransport(app=HttpMetrics(app, metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for path in ("/orders/1", "/orders/2", "/orders/limited", "/x/1", "/x/2"):
            await http.get(path)
        await http.request("BREW", "/orders/1")
    assert value(metrics, "kfm_http_requests_total", method="GET", route="/orders/{order_id}",
                 status="200") == 2
    assert value(metrics, "kfm_http_requests_total", method="GET", route="<unmatched>",
                 status="404") == 2
    assert value(metrics, "kfm_http_requests_total", method="OTHER",
                 route="/orders/{order_id}", status="405") == 1
    assert value(metrics, "kfm_rate_limited_requests_total", route="/orders/{order_id}") == 1
    assert value(metrics, "kfm_http_request_duration_seconds_count", method="GET",
                 route="/orders/{order_id}") == 3


async def test_an_app_that_raises_counts_as_a_500(metrics: Metrics) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await HttpMetrics(broken, metrics)({"type": "http", "method": "GET", "path": "/"},
                                           None, None)  # type: ignore[arg-type]
    assert value(metrics, "kfm_http_requests_total", method="GET", route="<unmatched>",
                 status="500") == 1


# Events ----------------------------------------------------------------------------------

@pytest.fixture
def events(metrics: Metrics) -> Iterator[EventMetrics]:
    events = EventMetrics(metrics)
    RecordDispatcher.observer = events
    yield events
    RecordDispatcher.observer = None


def _record(event: OrderPlaced, offset: int = 0) -> Record:
    value_, headers = EventSerializer(order_registry()).serialize(event)
    return Record("orders", 0, offset, event.aggregate_id.encode(), value_, headers)


async def test_dispatch_counts_consumed_retried_dead_lettered_skipped_and_claims(
        metrics: Metrics, events: EventMetrics) -> None:
    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced)
    async def handle(event: OrderPlaced) -> None:
        if event.aggregate_id == "bad":
            raise RuntimeError("no")

    dispatcher = RecordDispatcher(handlers, InMemoryIdempotencyStore(), InMemoryDeadLetterSink(),
                                  retry=RetryPolicy(max_attempts=3, initial_delay=0),
                                  consumer_group="g", middleware=[events.middleware])
    good = placed("ok")
    for offset, event in enumerate([good, good, placed("bad")]):
        await dispatcher.process(_record(event, offset))
    await dispatcher.process(Record("orders", 0, 9, None, b"{}", [("event_type", b"other")]))
    labels = {"topic": "orders", "event_type": "order.placed"}
    assert value(metrics, "kfm_events_consumed_total", **labels) == 1
    assert value(metrics, "kfm_event_handler_duration_seconds_count", **labels) == 4
    assert value(metrics, "kfm_events_retried_total", **labels) == 2
    assert value(metrics, "kfm_events_dead_lettered_total", **labels) == 1
    assert value(metrics, "kfm_events_skipped_total", reason="duplicate", **labels) == 1
    assert value(metrics, "kfm_events_skipped_total", topic="orders", event_type="other",
                 reason="no_handler") == 1
    # A failed run claims nothing (its transaction rolls back): only the good one claimed.
    assert value(metrics, "kfm_inbox_claims_total", group="g", outcome="claimed") == 1
    assert value(metrics, "kfm_inbox_claims_total", group="g", outcome="duplicate") == 1


async def test_poison_is_dead_lettered_under_its_raw_type(metrics: Metrics,
                                                         events: EventMetrics) -> None:
    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced)
    async def handle(event: OrderPlaced) -> None: ...

    dispatcher = RecordDispatcher(handlers, InMemoryIdempotencyStore(), InMemoryDeadLetterSink())
    await dispatcher.process(Record("orders", 0, 0, None, b"not json",
                                    [("event_type", b"order.placed"), ("event_version", b"2")]))
    assert value(metrics, "kfm_events_dead_lettered_total", topic="orders",
                 event_type="order.placed") == 1


class _Msg:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class _Err:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def retriable(self) -> bool:
        return False

    def fatal(self) -> bool:
        return False

    def txn_requires_abort(self) -> bool:
        return False

    def str(self) -> str:
        return "refused"

    def __str__(self) -> str:
        return "refused"


def test_deliveries_count_published_and_failures_not_dead_letters_or_purges(
        metrics: Metrics) -> None:
    from confluent_kafka import KafkaError

    events = EventMetrics(metrics)
    typed = [("event_type", b"order.placed")]
    events.delivered(None, _Msg("orders"), typed)
    events.delivered(None, _Msg("orders.dlq"), typed)
    events.delivered(KafkaError(KafkaError._PURGE_QUEUE), _Msg("orders"), typed)
    events.delivered(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), _Msg("orders"), typed)
    assert value(metrics, "kfm_events_published_total", topic="orders",
                 event_type="order.placed") == 1
    assert value(metrics, "kfm_events_published_total", topic="orders.dlq",
                 event_type="order.placed") == 0
    assert value(metrics, "kfm_events_publish_failures_total", topic="orders") == 1


# Gauges read at scrape time ----------------------------------------------------------------

def test_breaker_state_per_upstream(metrics: Metrics) -> None:
    breaker = CircuitBreaker("orders@http://a", BreakerConfig(min_calls=1, window=10.0,
                                                              open_for=60.0))
    registry = CollectorRegistry()
    registry.register(BreakerCollector(lambda: [breaker]))
    assert registry.get_sample_value("kfm_circuit_breaker_state",
                                     {"upstream": "orders@http://a"}) == 0
    breaker.acquire().failure()
    assert registry.get_sample_value("kfm_circuit_breaker_state",
                                     {"upstream": "orders@http://a"}) == 2


async def test_outbox_gauges_and_a_database_down_gives_no_sample(tmp_path: Path,
                                                                 caplog: Any) -> None:
    from sqlalchemy import MetaData

    metadata = MetaData()
    tables = messaging_tables(metadata)
    sagas = saga_tables(metadata).instances
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            now = datetime.now(UTC)
            await conn.execute(insert(sagas), [
                {"id": str(n), "saga_type": "ride", "data": {}, "status": "running", "step": 0,
                 "attempts": 0, "version": 1, "created_at": now, "updated_at": now}
                for n in range(2)])
        snapshot = DatabaseSnapshot(database, metadata, max_age=0)
        registry = CollectorRegistry()
        registry.register(snapshot)
        await snapshot.refresh()
        assert registry.get_sample_value("kfm_outbox_backlog_rows") == 0
        assert registry.get_sample_value("kfm_outbox_oldest_age_seconds") == 0
        assert tables.outbox is not None
    finally:
        await database.dispose()
    assert registry.get_sample_value("kfm_sagas", {"saga": "ride", "state": "running"}) == 2
    down = DatabaseSnapshot(Database("postgresql+asyncpg://u:p@127.0.0.1:1/none"), metadata,
                            timeout=2.0)
    await down.refresh()
    assert list(down.collect()) == []
    assert "did not answer" in caplog.text


# Security ----------------------------------------------------------------------------------

async def test_rejected_tokens_counted_by_rule(metrics: Metrics) -> None:
    key = SigningKey.generate("EdDSA", now=time.time())
    verifier = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    count_rejections(verifier, metrics)
    count_rejections(verifier, metrics)  # once only
    expired = sign(key, claims(exp=int(time.time()) - 3600))
    for token in (expired, "not.a.token"):
        with pytest.raises(TokenRejectedError):
            await verifier.verify(token)
    await verifier.verify(sign(key, claims()))
    assert value(metrics, "kfm_token_rejections_total", reason="expired") == 1
    assert value(metrics, "kfm_token_rejections_total", reason="malformed") == 1


async def test_jwks_fetches_counted_by_outcome(metrics: Metrics) -> None:
    answers = iter([httpx.Response(200, json={"keys": []}), httpx.Response(500)])
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: next(answers)))
    jwks = JwksClient("http://issuer/jwks", http=http, min_refresh_interval=0)
    count_fetches(jwks, metrics)
    await jwks.refresh()
    await jwks.refresh()
    assert value(metrics, "kfm_jwks_refreshes_total", outcome="ok") == 1
    assert value(metrics, "kfm_jwks_refreshes_total", outcome="error") == 1
    await http.aclose()


# Multiprocess ------------------------------------------------------------------------------

def test_prepare_multiprocess_empties_the_directory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    assert prepare_multiprocess() == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_consumer_lag_and_paused_come_from_its_own_state() -> None:
    """`EventConsumer.lag`: per owned partition, the records unfinished here and how far the
    end is past the next one to finish (None while librdkafka knows no position or end)."""
    from core.config import KafkaConfig
    from core.messaging.consumer import EventConsumer

    class Client:
        def progress(self, tps: Any) -> dict[tuple[str, int], tuple[int, int]]:
            return {("t", 0): (10, 15), ("t", 1): (-1, 7), ("t", 2): (4, 4)}

    consumer = EventConsumer(KafkaConfig("127.0.0.1:1", "c", "g"), None)  # type: ignore[arg-type]
    consumer._client = Client()  # type: ignore[assignment]
    consumer._owned = {("t", 0), ("t", 1), ("t", 2), ("t", 3)}
    consumer._pending = {("t", 0): 2, ("t", 2): 0}
    consumer._paused = {("t", 0)}
    assert consumer.lag() == {("t", 0): (2, 7), ("t", 1): (0, None), ("t", 2): (0, 0),
                              ("t", 3): (0, None)}
    assert consumer.paused == 1
