"""`create_service` runs a real service: the sample service in its own process, over HTTP, on
real Kafka, with SQLite and PostgreSQL; and refuses to start on a database behind its code."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from core.config import KafkaConfig, Settings
from core.db import migrations
from core.db.engine import Database
from core.messaging.inbox import DatabaseIdempotencyStore
from core.messaging.kafka_client import read_topic
from tests.integration.served import Spawn, serve
from tests.sample_service.app import AUDIT_HANDLER, SERVICE_DIR, service
from tests.sample_service.models import Base
from tests.sample_service.service import WidgetService
from tests.support import eventually, unique


async def test_service_migrates_serves_publishes_and_consumes(
    db_url: str, kafka_config: KafkaConfig, spawn: Spawn
) -> None:
    served = await serve(spawn, "tests.integration.procs.sample_app", database_url=db_url,
                         kafka=kafka_config, ready_path="/widgets")
    base, proc = served.base_url, served.proc

    sku = unique("SKU").upper()
    async with httpx.AsyncClient(base_url=base) as http:
        created = await http.post("/widgets", json={"name": "gear", "sku": sku,
                                                    "price_cents": 250})
        refused = await http.post("/widgets", json={"name": "gear", "sku": "x",
                                                    "price_cents": -1})
    assert created.status_code == 201, created.text
    assert refused.status_code == 422 and refused.json()["error"]["fields"]
    widget_id = created.json()["data"]["id"]

    # The outbox relay published the event the create committed...
    mine: list[dict[str, object]] = []

    async def published() -> bool:
        records = await read_topic(kafka_config, WidgetService.events_topic)
        mine[:] = [e for e in (json.loads(r.value or b"{}") for r in records)
                   if e.get("aggregate_id") == widget_id]
        return bool(mine)

    await eventually(published, interval=0.2)
    (event,) = mine
    assert event["event_type"] == "widget.created"

    # ...and the service's own consumer ran its handler once, through the database inbox.
    db = Database(db_url)
    try:
        inbox = DatabaseIdempotencyStore(db, Base.metadata)
        await eventually(lambda: inbox.seen(str(event["event_id"]), AUDIT_HANDLER),
                         interval=0.2)
        # Development start-up migrated the fresh database to the code's head.
        assert set(await migrations.current(SERVICE_DIR, db)) == set(migrations.heads(SERVICE_DIR))
    finally:
        await db.dispose()

    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    # uvicorn re-raises the SIGTERM it handled once the app has shut down.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "core.app: sample stopped" in output, output


async def test_outside_development_a_database_behind_the_code_refuses_to_start(
    tmp_path: Path, kafka_config: KafkaConfig
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}"
    settings = Settings(environment="test", service_name="sample", database_url=url,
                        kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                        kafka_consumer_group=unique("sample"))
    app = service(settings)
    with pytest.raises(migrations.MigrationError, match="python -m core migrate"):
        async with app.router.lifespan_context(app):
            pass

    db = Database(url)
    await migrations.upgrade(SERVICE_DIR, db)
    await db.dispose()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            listed = await http.get("/widgets")
        assert listed.status_code == 200 and listed.json()["data"] == []
        await eventually(lambda: app.state.runtime.relay.holds_lease)
    assert not app.state.runtime.relay.holds_lease, "the relay kept its lease after shutdown"
