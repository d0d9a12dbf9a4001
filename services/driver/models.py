"""The driver service's tables: drivers, their reservations for orders, the latest-location
read model, its outbox and inbox."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Date, Float, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db import ServiceBase, TimestampMixin, UUIDPrimaryKeyMixin
from core.messaging import messaging_tables
from services.driver.geo import PRECISION


class Base(ServiceBase, DeclarativeBase):
    pass


class Driver(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """One per user: the licence, the vehicle and where in its shift the driver is."""

    __tablename__ = "drivers"

    user_id: Mapped[str] = mapped_column(String(64), unique=True)
    licence_number: Mapped[str] = mapped_column(String(20), unique=True)
    licence_expiry: Mapped[date] = mapped_column(Date)
    vehicle_make: Mapped[str] = mapped_column(String(50))
    vehicle_model: Mapped[str] = mapped_column(String(50))
    vehicle_plate: Mapped[str] = mapped_column(String(12))
    vehicle_colour: Mapped[str] = mapped_column(String(30))
    vehicle_year: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="offline", index=True)


class DriverLocation(Base):
    """The latest location of each driver (a read model: one row per driver, replaced only
    by a later `recorded_at`). `cell` is its geohash, indexed: the nearby query's ranges."""

    __tablename__ = "driver_locations"

    driver_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("drivers.id", ondelete="CASCADE"), primary_key=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    cell: Mapped[str] = mapped_column(String(PRECISION), index=True)
    recorded_at: Mapped[datetime]


class Reservation(TimestampMixin, Base):
    """A driver held for an order (the ride saga's reserve step). One per order: the key makes
    a repeated reserve command answer with the driver it already holds. `active` while the
    driver is busy for the order; `released` when the saga compensated (the order was
    cancelled) and `completed` when the trip ended: both gave the driver back."""

    __tablename__ = "driver_reservations"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    driver_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("drivers.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="active")


outbox = messaging_tables(Base.metadata).outbox
