"""Every metric of a service moves when its cause happens: one service process (the sample
service with a probe topic, `procs/metrics_app.py`) on real Kafka and SQLite, scraped over
HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from core.config import KafkaConfig
from core.db.engine import Database
from core.messaging import KafkaEventBus
from core.messaging.outbox import outbox_table
from core.messaging.outbox.store import MAX_ATTEMPTS
from tests.helpers import eventually, unique
from tests.helpers.metrics import metric, scrape, value
from tests.helpers.service import Spawn, serve
from tests.sample_service.app import handlers
from tests.sample_service.events import WidgetCreated, WidgetData, WidgetDeleted
from tests.sample_service.models import Base
from tests.sample_service.service import WidgetService

pytestmark = pytest.mark.timeout(180)


class Probe:
    def __init__(self, base_url: str, topic: str, database_url: str) -> None:
        self.base_url, self.topic, self.database_url = base_url, topic, database_url


@pytest.fixture(scope="module")
async def probe(module_spawn: Spawn, kafka: object, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[Probe]:
    config = KafkaConfig(kafka.bootstrap_servers, unique("test"), unique("group"))  # type: ignore[attr-defined]
    topic = unique("metrics-probe")
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('metrics') / 'probe.db'}"
    served = await serve(module_spawn, "tests.integration.procs.metrics_app",
                         database_url=url, kafka=config, env={"PROBE_TOPIC": topic})
    yield Probe(served.base_url, topic, url)


@pytest.fixture
async def bus(kafka: object) -> AsyncIterator[KafkaEventBus]:
    config = KafkaConfig(kafka.bootstrap_servers, unique("test"), unique("group"))  # type: ignore[attr-defined]
    bus = KafkaEventBus(config, handlers.events)
    await bus.producer.start()
    yield bus
    await bus.producer.stop()


def widget(sku: str) -> WidgetData:
    return WidgetData(widget_id=str(uuid.uuid4()), sku=sku, price_cents=1)


async def test_http_requests_counted_per_route_template(probe: Probe) -> None:
    async with httpx.AsyncClient(base_url=probe.base_url) as http:
        for _ in range(2):
            assert (await http.get(f"/widgets/{uuid.uuid4()}")).status_code == 404
        assert (await http.get(f"/nowhere/{uuid.uuid4()}")).status_code == 404
    text = await scrape(probe.base_url)
    routes = {s.labels["route"] for s in _samples(text, "kfm_http_requests_total")}
    assert "/widgets/{widget_id}" in routes or "/widgets/{id}" in routes, routes
    assert not any(r.startswith("/nowhere") for r in routes)  # bounded: never the raw path
    assert (value(text, "kfm_http_requests_total", route="<unmatched>", status="404")
            or 0) >= 1
    assert (value(text, "kfm_http_request_duration_seconds_count", method="GET") or 0) >= 3
    assert value(text, "kfm_service_info") == 1


async def test_published_consumed_and_claimed(probe: Probe) -> None:
    topic = WidgetService.events_topic
    before = await scrape(probe.base_url)
    async with httpx.AsyncClient(base_url=probe.base_url) as http:
        created = await http.post("/widgets", json={"name": "gear", "sku": unique("M").upper(),
                                                    "price_cents": 5})
    assert created.status_code == 201, created.text

    async def moved() -> bool:
        now = await scrape(probe.base_url)
        return all(_delta(before, now, name, **labels) >= 1 for name, labels in [
            ("kfm_events_published_total", {"topic": topic, "event_type": "widget.created"}),
            ("kfm_events_consumed_total", {"topic": topic, "event_type": "widget.created"}),
            ("kfm_event_handler_duration_seconds_count",
             {"topic": topic, "event_type": "widget.created"}),
            ("kfm_inbox_claims_total", {"outcome": "claimed"}),
        ])

    await eventually(moved, interval=0.3, what=f"{_events(await scrape(probe.base_url))}")


async def test_duplicate_and_no_handler_are_skipped(probe: Probe, bus: KafkaEventBus) -> None:
    topic = WidgetService.events_topic
    before = await scrape(probe.base_url)
    event = WidgetCreated(aggregate_id=str(uuid.uuid4()), data=widget("dup"))
    await bus.publish(topic, event)
    await bus.publish(topic, event)  # the same event id: the inbox skips it
    await bus.publish(probe.topic, WidgetCreated(aggregate_id="x", data=widget("other")))

    async def moved() -> bool:
        now = await scrape(probe.base_url)
        return (_delta(before, now, "kfm_events_skipped_total", reason="duplicate",
                       event_type="widget.created") >= 1
                and _delta(before, now, "kfm_inbox_claims_total", outcome="duplicate") >= 1
                and _delta(before, now, "kfm_events_skipped_total", reason="no_handler",
                           topic=probe.topic) >= 1)

    await eventually(moved, interval=0.3)


async def test_a_failing_handler_is_retried_then_dead_lettered(probe: Probe,
                                                               bus: KafkaEventBus) -> None:
    labels = {"topic": probe.topic, "event_type": "widget.deleted"}
    await bus.publish(probe.topic, WidgetDeleted(aggregate_id="p", data=widget("poison")))

    async def dead() -> bool:
        return await metric(probe.base_url, "kfm_events_dead_lettered_total", **labels) == 1

    await eventually(dead, interval=0.3)
    assert await metric(probe.base_url, "kfm_events_retried_total", **labels) >= 1
    assert await metric(probe.base_url, "kfm_events_consumed_total", **labels) == 0


async def test_blocked_handlers_show_lag_and_in_flight_until_released(
        probe: Probe, bus: KafkaEventBus) -> None:
    for _ in range(3):
        await bus.publish(probe.topic, WidgetDeleted(aggregate_id=str(uuid.uuid4()),
                                                     data=widget("block")))

    async def lag() -> float:
        text = await scrape(probe.base_url)
        return value(text, "kfm_consumer_lag", topic=probe.topic) or 0.0

    async def behind() -> bool:
        text = await scrape(probe.base_url)
        return ((value(text, "kfm_consumer_lag", topic=probe.topic) or 0) >= 3
                and (value(text, "kfm_consumer_inflight_records") or 0) >= 3)

    await eventually(behind, interval=0.3)
    text = await scrape(probe.base_url)
    assert value(text, "kfm_consumer_paused_partitions") == 0
    async with httpx.AsyncClient(base_url=probe.base_url) as http:
        assert (await http.post("/probe/release")).status_code < 300
    await eventually(lambda: _zero(lag), interval=0.3)


async def test_an_unsent_outbox_row_shows_backlog_age_and_parked(probe: Probe) -> None:
    database = Database(probe.database_url)
    try:
        async with database.transaction() as session:
            await session.execute(insert(outbox_table(Base.metadata)).values(
                event_id=str(uuid.uuid4()), topic="nowhere", key=None,
                event_type="widget.created", payload=b"{}", headers=[],
                created_at=datetime.now(UTC) - timedelta(minutes=5), published_at=None,
                attempts=MAX_ATTEMPTS, last_error="refused for good"))
    finally:
        await database.dispose()

    async def counted() -> str | None:  # a scrape within the last second is served cached
        text = await scrape(probe.base_url)
        return text if (value(text, "kfm_outbox_backlog_rows") or 0) >= 1 else None

    text = await eventually(counted, interval=0.3)
    assert (value(text, "kfm_outbox_parked_rows") or 0) >= 1
    assert (value(text, "kfm_outbox_oldest_age_seconds") or 0) >= 290
    assert value(text, "kfm_registry_instances", service_name="metrics-probe") is not None


async def _zero(read: object) -> bool:
    return await read() == 0  # type: ignore[operator,no-any-return]


def _events(text: str) -> str:
    return "\n".join(line for line in text.splitlines()
                     if line.startswith(("kfm_events", "kfm_inbox", "kfm_event_")))


def _samples(text: str, name: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name]


def _delta(before: str, after: str, name: str, **labels: str) -> float:
    return (value(after, name, **labels) or 0.0) - (value(before, name, **labels) or 0.0)

