"""`python -m services.catalog.backfill --source sqlite:///shop.db`: copy the shop's products
into the catalog service's database (DATABASE_URL, as the service reads it).

Idempotent, so it can run again and again while the shop still takes writes (a poor man's
change-data-capture until writes move): a row is inserted when missing, updated when the
shop's copy is newer than the one copied last (its `updated_at`), and left alone otherwise,
or when the catalog service has written it itself since (it owns that row now). Every row it
inserts or changes publishes `catalog.product_changed` through the outbox, in the same
transaction as the row, so consumers see copied products exactly as written ones. Ids are
the shop's; on PostgreSQL the id sequence is moved past the highest copied id, so the
service's own inserts never collide with them."""

# Imports sorted as in services/catalog/, where this file runs (there it is first-party).
# ruff: noqa: I001

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    select,
    text,
)

from core.db import Database
from core.messaging import EventSerializer, OutboxWriter
from services.catalog.config import CatalogSettings
from services.catalog.events import CATALOG_EVENTS, events
from services.catalog.models import Base, Product
from services.catalog.rules import changed

SOURCE = Table(  # the shop's table, as the backfill reads it (only the columns it copies)
    "products", MetaData(),
    Column("id", Integer, primary_key=True), Column("sku", String), Column("name", String),
    Column("price_cents", Integer), Column("updated_at", DateTime))


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    owned_here: int = 0


def source_batches(url: str, size: int) -> Iterator[Sequence[Any]]:
    """The shop's products in id order, `size` at a time (keyset paging: no OFFSET scan)."""
    engine = create_engine(url)
    try:
        last = 0
        while True:
            with engine.connect() as conn:
                rows = conn.execute(select(SOURCE).where(SOURCE.c.id > last)
                                    .order_by(SOURCE.c.id).limit(size)).all()
            if not rows:
                return
            yield rows
            last = rows[-1].id
    finally:
        engine.dispose()


def aware(value: datetime) -> datetime:
    """SQLite gives the shop's timestamps back without a zone; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def backfill(source_url: str, database: Database, outbox: OutboxWriter,
                   batch: int = 500) -> Counts:
    counts = Counts()
    for rows in source_batches(source_url, batch):
        async with database.transaction() as session:  # one batch, its rows and events
            found = {p.id: p for p in await session.scalars(
                select(Product).where(Product.id.in_([r.id for r in rows]))
                .with_for_update())}
            for row in rows:
                stamp = aware(row.updated_at)
                product = found.get(row.id)
                if product is None:
                    product = Product(id=row.id, sku=row.sku, name=row.name,
                                      price_cents=row.price_cents, source_updated_at=stamp)
                    session.add(product)
                    counts.inserted += 1
                elif product.source_updated_at is None:
                    counts.owned_here += 1
                    continue
                elif product.source_updated_at >= stamp:
                    counts.unchanged += 1
                    continue
                else:
                    product.sku, product.name = row.sku, row.name
                    product.price_cents, product.source_updated_at = row.price_cents, stamp
                    counts.updated += 1
                await session.flush()
                await outbox.add(session, CATALOG_EVENTS, changed(product, "backfill"))
    if database.dialect == "postgresql":
        async with database.transaction() as session:
            top = await session.scalar(select(func.max(Product.id)))
            if top is not None:
                await session.execute(text(
                    "SELECT setval(pg_get_serial_sequence('products', 'id'), :top)"),
                    {"top": top})
    return counts


async def main(source_url: str, batch: int) -> Counts:
    settings = CatalogSettings()
    database = Database(settings.database_url)
    try:
        outbox = OutboxWriter(Base.metadata, EventSerializer(events, service_name="catalog"))
        return await backfill(source_url, database, outbox, batch)
    finally:
        await database.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m services.catalog.backfill")
    parser.add_argument("--source", required=True, help="the shop's database URL")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    counts = asyncio.run(main(args.source, args.batch))
    print(f"inserted {counts.inserted}, updated {counts.updated}, unchanged "
          f"{counts.unchanged}, written by the catalog service since {counts.owned_here}")
