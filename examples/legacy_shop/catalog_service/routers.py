"""The products routes: the shop's `/catalog/products` paths, the same paths here (the
generated service's own live under `/catalog` too). Bare bodies, as the shop answered, not the
platform's envelope: the move must not change what clients read. No token needed, as in the
shop; adding the edge's check is a contract change of its own, made after the move."""

# Imports sorted as in services/catalog/, where this file runs (there it is first-party).
# ruff: noqa: I001

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

from typing import Annotated

from fastapi import APIRouter, Depends

from core.app import RuntimeDep
from core.bases import DatabaseDep
from services.catalog.rules import Catalog
from services.catalog.schemas import ProductIn, ProductOut


async def get_catalog(runtime: RuntimeDep, database: DatabaseDep) -> Catalog:
    return Catalog(database, runtime.outbox)


CatalogDep = Annotated[Catalog, Depends(get_catalog)]

products = APIRouter(prefix="/catalog/products", tags=["products"])


@products.get("", response_model=list[ProductOut], summary="List the products")
async def list_products(catalog: CatalogDep) -> list[ProductOut]:
    return await catalog.list()


@products.get("/{product_id}", response_model=ProductOut, summary="Read a product")
async def get_product(product_id: int, catalog: CatalogDep) -> ProductOut:
    return await catalog.get(product_id)


@products.post("", response_model=ProductOut, status_code=201, summary="Add a product")
async def create_product(body: ProductIn, catalog: CatalogDep) -> ProductOut:
    return await catalog.create(body)


@products.put("/{product_id}", response_model=ProductOut, summary="Replace a product")
async def update_product(product_id: int, body: ProductIn, catalog: CatalogDep) -> ProductOut:
    return await catalog.update(product_id, body)
