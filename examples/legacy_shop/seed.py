"""A few rows on first start, so every path has something to answer."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from examples.legacy_shop.models import Customer, Order, OrderLine, Product

PRODUCTS = [("TEA-001", "Green tea, 100 g", 450), ("TEA-002", "Black tea, 250 g", 790),
            ("MUG-001", "Stoneware mug", 1200), ("POT-001", "Cast iron teapot", 3900)]
CUSTOMERS = [("ada@example.com", "Ada"), ("grace@example.com", "Grace")]


def seed(sessions: sessionmaker[Session]) -> None:
    with sessions() as db:
        if db.scalar(select(Product.id).limit(1)) is not None:
            return
        products = [Product(sku=s, name=n, price_cents=p) for s, n, p in PRODUCTS]
        customers = [Customer(email=e, name=n) for e, n in CUSTOMERS]
        db.add_all([*products, *customers])
        db.flush()
        order = Order(customer_id=customers[0].id)
        order.lines.append(OrderLine(product_id=products[0].id, quantity=2,
                                     price_cents=products[0].price_cents))
        db.add(order)
        db.commit()
