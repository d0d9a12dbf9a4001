"""The catalog's rules: reads, and writes that publish `catalog.product_changed` in the same
transaction (through the outbox: the event goes out if and only if the write commits)."""

# Imports sorted as in services/catalog/, where this file runs (there it is first-party).
# ruff: noqa: I001

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.bases import ConflictError, EventOutbox, NotFoundError
from core.db import Database
from services.catalog.events import CATALOG_EVENTS, ProductChanged, ProductChangedData
from services.catalog.models import Product
from services.catalog.schemas import ProductIn, ProductOut


def changed(product: Product, source: str) -> ProductChanged:
    return ProductChanged(aggregate_id=str(product.id), data=ProductChangedData(
        product_id=product.id, sku=product.sku, name=product.name,
        price_cents=product.price_cents, source=source))


class Catalog:
    """The products of one request."""

    def __init__(self, database: Database, outbox: EventOutbox) -> None:
        self.database = database
        self.outbox = outbox

    async def list(self) -> list[ProductOut]:
        async with self.database.session() as session:
            rows = await session.scalars(select(Product).order_by(Product.id))
            return [ProductOut.model_validate(row) for row in rows]

    async def get(self, product_id: int) -> ProductOut:
        async with self.database.session() as session:
            product = await session.get(Product, product_id)
            if product is None:
                raise NotFoundError(f"Product {product_id} not found")
            return ProductOut.model_validate(product)

    async def create(self, data: ProductIn) -> ProductOut:
        try:
            async with self.database.transaction() as session:
                product = Product(**data.model_dump())
                session.add(product)
                await session.flush()
                await self.outbox.add(session, CATALOG_EVENTS, changed(product, "api"))
                return ProductOut.model_validate(product)
        except IntegrityError as e:
            raise ConflictError("a product with this sku exists") from e

    async def update(self, product_id: int, data: ProductIn) -> ProductOut:
        async with self.database.transaction() as session:
            product = await session.get(Product, product_id, with_for_update=True)
            if product is None:
                raise NotFoundError(f"Product {product_id} not found")
            for key, value in data.model_dump().items():
                setattr(product, key, value)
            product.source_updated_at = None  # written here now: no copy may overwrite it
            await session.flush()
            await self.outbox.add(session, CATALOG_EVENTS, changed(product, "api"))
            return ProductOut.model_validate(product)
