"""Orders: stays in the monolith, and reads the catalog's table for prices (the join the
migration has to replace: see docs/migrating.md, "Retire the old code")."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from examples.legacy_shop.db import SessionDep
from examples.legacy_shop.models import Customer, Order, OrderLine, Product
from examples.legacy_shop.schemas import OrderIn, OrderOut

router = APIRouter(prefix="/orders", tags=["orders"])


@router.get("", response_model=list[OrderOut])
def list_orders(db: SessionDep) -> list[Order]:
    return list(db.scalars(select(Order).order_by(Order.id)))


@router.get("/{order_id}", response_model=OrderOut)
def get_order(order_id: int, db: SessionDep) -> Order:
    order = db.get(Order, order_id)
    if order is None:
        raise HTTPException(404, "no such order")
    return order


@router.post("", response_model=OrderOut, status_code=201)
def place_order(body: OrderIn, db: SessionDep) -> Order:
    if db.get(Customer, body.customer_id) is None:
        raise HTTPException(422, "no such customer")
    order = Order(customer_id=body.customer_id)
    for line in body.lines:
        product = db.get(Product, line.product_id)  # the catalog's table, read in place
        if product is None:
            raise HTTPException(422, f"no such product: {line.product_id}")
        order.lines.append(OrderLine(product_id=product.id, quantity=line.quantity,
                                     price_cents=product.price_cents))
    db.add(order)
    db.commit()
    return order
