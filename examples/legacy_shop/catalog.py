"""The catalog: the part the guide moves out first (few writers, many readers)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from examples.legacy_shop.db import SessionDep
from examples.legacy_shop.models import Product
from examples.legacy_shop.schemas import ProductIn, ProductOut

router = APIRouter(prefix="/catalog/products", tags=["catalog"])


@router.get("", response_model=list[ProductOut])
def list_products(db: SessionDep) -> list[Product]:
    return list(db.scalars(select(Product).order_by(Product.id)))


@router.get("/{product_id}", response_model=ProductOut)
def get_product(product_id: int, db: SessionDep) -> Product:
    product = db.get(Product, product_id)
    if product is None:
        raise HTTPException(404, "no such product")
    return product


@router.post("", response_model=ProductOut, status_code=201)
def create_product(body: ProductIn, db: SessionDep) -> Product:
    product = Product(**body.model_dump())
    db.add(product)
    try:
        db.commit()
    except IntegrityError as e:
        raise HTTPException(409, "sku taken") from e
    return product


@router.put("/{product_id}", response_model=ProductOut)
def update_product(product_id: int, body: ProductIn, db: SessionDep) -> Product:
    product = get_product(product_id, db)
    for key, value in body.model_dump().items():
        setattr(product, key, value)
    db.commit()
    return product
