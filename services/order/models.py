"""The order service's tables: the event store (the orders' streams), the saga tables, the
two read models with their projection positions, the outbox and the inbox."""

from __future__ import annotations

from sqlalchemy import Column, Float, String, Table
from sqlalchemy.orm import DeclarativeBase

from core.db import ServiceBase, UtcDateTime
from core.event_sourcing import event_store_tables
from core.messaging import messaging_tables
from core.projections import positions_table
from core.saga import saga_tables


class Base(ServiceBase, DeclarativeBase):
    pass


event_store_tables(Base.metadata)
saga_tables(Base.metadata)
positions_table(Base.metadata)
outbox = messaging_tables(Base.metadata).outbox

order_history = Table(
    "order_history", Base.metadata,
    Column("order_id", String(36), primary_key=True),
    Column("passenger_id", String(64), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("driver_id", String(36)),
    Column("reason", String(500)),
    Column("pickup_lat", Float, nullable=False),
    Column("pickup_lon", Float, nullable=False),
    Column("dropoff_lat", Float, nullable=False),
    Column("dropoff_lon", Float, nullable=False),
    Column("placed_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
"""Read model: each passenger's orders (`GET /orders`), from `order.events`."""

driver_trips = Table(
    "driver_trips", Base.metadata,
    Column("order_id", String(36), primary_key=True),
    Column("driver_id", String(36), nullable=False, index=True),
    Column("driver_user_id", String(64), nullable=False, index=True),
    Column("passenger_id", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
"""Read model: each driver's trips (`GET /orders/trips`), from `order.events`: a row once a
driver is reserved for the order."""
