"""The outbox, lease and inbox tables as each service's database gets them. Each service's
Alembic history is generated from these definitions, so a change here is a schema change in
every service: these tests make it deliberate (the DDL is pinned), and check the columns'
defaults and the partial indexes the relay's queries rely on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable, Table

from core.messaging import messaging_tables
from core.messaging.inbox import inbox_table
from core.messaging.outbox.store import lease_table, outbox_table


def ddl(table: Table, dialect: str) -> list[str]:
    compiler = postgresql.dialect() if dialect == "postgresql" else sqlite.dialect()
    statements = [str(CreateTable(table).compile(dialect=compiler))]
    statements += [str(CreateIndex(ix).compile(dialect=compiler))
                   for ix in sorted(table.indexes, key=lambda ix: str(ix.name))]
    return [" ".join(s.split()) for s in statements]


def test_the_outbox_table() -> None:
    table = outbox_table(MetaData(schema="svc"))
    assert ddl(table, "postgresql") == [
        "CREATE TABLE svc.outbox ( id BIGSERIAL NOT NULL, event_id VARCHAR(36) NOT NULL, "
        "topic VARCHAR(249) NOT NULL, key VARCHAR(255), event_type VARCHAR(255) NOT NULL, "
        "payload BYTEA NOT NULL, headers JSON NOT NULL, "
        "created_at TIMESTAMP WITH TIME ZONE NOT NULL, "
        "published_at TIMESTAMP WITH TIME ZONE, attempts INTEGER NOT NULL, "
        "last_error TEXT, PRIMARY KEY (id), UNIQUE (event_id) )",
        "CREATE INDEX ix_outbox_failing ON svc.outbox (topic, key, id) "
        "WHERE published_at IS NULL AND attempts > 0",
        "CREATE INDEX ix_outbox_pending ON svc.outbox (id) WHERE published_at IS NULL",
        "CREATE INDEX ix_outbox_published_at ON svc.outbox (published_at)",
    ]
    assert ddl(table, "sqlite")[1:] == [
        'CREATE INDEX svc.ix_outbox_failing ON outbox (topic, "key", id) '
        "WHERE published_at IS NULL AND attempts > 0",
        "CREATE INDEX svc.ix_outbox_pending ON outbox (id) WHERE published_at IS NULL",
        "CREATE INDEX svc.ix_outbox_published_at ON outbox (published_at)",
    ]
    assert "id INTEGER NOT NULL" in ddl(table, "sqlite")[0]  # SQLite's rowid: autoincrement


def test_the_lease_and_inbox_tables() -> None:
    metadata = MetaData(schema="svc")
    assert ddl(lease_table(metadata), "postgresql") == [
        "CREATE TABLE svc.outbox_lease ( name VARCHAR(100) NOT NULL, "
        "owner VARCHAR(255) NOT NULL, expires_at TIMESTAMP WITH TIME ZONE NOT NULL, "
        "PRIMARY KEY (name) )"]
    assert ddl(inbox_table(metadata), "postgresql") == [
        "CREATE TABLE svc.inbox ( event_id VARCHAR(36) NOT NULL, "
        "handler VARCHAR(255) NOT NULL, processed_at TIMESTAMP WITH TIME ZONE NOT NULL, "
        "PRIMARY KEY (event_id, handler) )"]


def test_each_table_is_made_once_per_metadata_in_its_schema() -> None:
    plain, schemed = MetaData(), MetaData(schema="svc")
    for make in (outbox_table, lease_table, inbox_table):
        assert make(plain) is make(plain)
        assert make(schemed) is make(schemed) and make(schemed).schema == "svc"
        assert make(plain) is not make(schemed)
    assert sorted(plain.tables) == ["inbox", "outbox", "outbox_lease"]
    assert sorted(schemed.tables) == ["svc.inbox", "svc.outbox", "svc.outbox_lease"]


async def test_a_new_row_starts_with_no_attempts_and_ids_count_up(tmp_path: Path) -> None:
    metadata = MetaData()
    table = outbox_table(metadata)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'tables.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        for n in range(2):
            await conn.execute(insert(table).values(
                event_id=f"e-{n}", topic="t", event_type="x", payload=b"", headers=[],
                created_at=datetime.now(UTC)))
        rows = (await conn.execute(select(table.c.id, table.c.attempts))).all()
    await engine.dispose()
    assert [tuple(r) for r in rows] == [(1, 0), (2, 0)]


def test_messaging_tables_declares_the_three_once() -> None:
    metadata = MetaData(schema="svc")
    tables = messaging_tables(metadata)
    assert (tables.outbox.name, tables.lease.name) == ("outbox", "outbox_lease")
    assert tables.inbox is not None and tables.inbox.name == "inbox"
    assert sorted(metadata.tables) == ["svc.inbox", "svc.outbox", "svc.outbox_lease"]
    assert messaging_tables(metadata) == tables  # declared once: the same tables again


def test_a_service_that_consumes_nothing_gets_no_inbox() -> None:
    metadata = MetaData()
    tables = messaging_tables(metadata, inbox=False)
    assert tables.inbox is None
    assert sorted(metadata.tables) == ["outbox", "outbox_lease"]
