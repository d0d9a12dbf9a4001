"""The order: an event-sourced aggregate (its rules and its status machine), and the use
cases the routes and the ride saga run on it.

    pending -> driver_reserved -> confirmed -> completed
    pending -> rejected                       (no driver near the pickup, or no answer)
    pending | driver_reserved | confirmed -> cancelled   (the passenger, once the driver is
                                                          released)
"""

from __future__ import annotations

from typing import Literal

from core.bases import ConflictError
from core.event_sourcing import Aggregate, AggregateRepository, applies
from services.order.events import (
    OrderCancelled,
    OrderChangeData,
    OrderCompleted,
    OrderConfirmed,
    OrderDriverReserved,
    OrderPlaced,
    OrderPlacedData,
    OrderRejected,
    Point,
)

Status = Literal["pending", "driver_reserved", "confirmed", "rejected", "cancelled",
                 "completed"]
OPEN: frozenset[str] = frozenset({"pending", "driver_reserved", "confirmed"})
"""Statuses an order can still leave; the others are final."""


class OrderStateError(ConflictError):
    """The order's status does not allow this (a 409)."""


class Order(Aggregate):
    """One ride order. Its passenger places it; the ride saga reserves a driver and confirms
    it or ends it; the passenger may cancel it while it is open; its driver completes it."""

    status: Status = "pending"
    passenger_id: str = ""
    pickup: Point | None = None
    dropoff: Point | None = None
    driver_id: str | None = None
    driver_user_id: str | None = None
    reason: str | None = None

    @classmethod
    def place(cls, order_id: str, passenger_id: str, pickup: Point, dropoff: Point) -> Order:
        order = cls(id=order_id)
        order.record(OrderPlaced(aggregate_id=order_id, data=OrderPlacedData(
            order_id=order_id, passenger_id=passenger_id, pickup=pickup, dropoff=dropoff)))
        return order

    def _change(self, **fields: str | None) -> OrderChangeData:
        return OrderChangeData(order_id=self.id, passenger_id=self.passenger_id,
                               driver_id=self.driver_id, driver_user_id=self.driver_user_id,
                               **fields)

    def _require(self, *statuses: str, to: str) -> None:
        if self.status not in statuses:
            raise OrderStateError(f"order {self.id} is {self.status}: it cannot become {to}")

    def reserve(self, driver_id: str, driver_user_id: str) -> None:
        self._require("pending", to="driver_reserved")
        self.record(OrderDriverReserved(aggregate_id=self.id, data=OrderChangeData(
            order_id=self.id, passenger_id=self.passenger_id, driver_id=driver_id,
            driver_user_id=driver_user_id)))

    def confirm(self) -> None:
        self._require("driver_reserved", to="confirmed")
        self.record(OrderConfirmed(aggregate_id=self.id, data=self._change()))

    def reject(self, reason: str) -> None:
        self._require("pending", "driver_reserved", to="rejected")
        self.record(OrderRejected(aggregate_id=self.id, data=self._change(reason=reason)))

    def cancel(self, reason: str) -> None:
        self._require(*OPEN, to="cancelled")
        self.record(OrderCancelled(aggregate_id=self.id, data=self._change(reason=reason)))

    def complete(self) -> None:
        self._require("confirmed", to="completed")
        self.record(OrderCompleted(aggregate_id=self.id, data=self._change()))

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.passenger_id = event.data.passenger_id
        self.pickup, self.dropoff = event.data.pickup, event.data.dropoff

    @applies(OrderDriverReserved)
    def _reserved(self, event: OrderDriverReserved) -> None:
        self.status = "driver_reserved"
        self.driver_id, self.driver_user_id = event.data.driver_id, event.data.driver_user_id

    @applies(OrderConfirmed)
    def _confirmed(self, event: OrderConfirmed) -> None:
        self.status = "confirmed"

    @applies(OrderRejected)
    def _rejected(self, event: OrderRejected) -> None:
        self.status, self.reason = "rejected", event.data.reason

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status, self.reason = "cancelled", event.data.reason

    @applies(OrderCompleted)
    def _completed(self, event: OrderCompleted) -> None:
        self.status = "completed"


OrderRepository = AggregateRepository[Order]


def may_read(order: Order, user_id: str, *, admin: bool) -> bool:
    """The passenger, the assigned driver (its user) or an admin; anyone else sees a 404."""
    return admin or user_id in (order.passenger_id, order.driver_user_id)
