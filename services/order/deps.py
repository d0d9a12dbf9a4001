"""The order service's parts and route dependencies: the order repository (the event store
over the service's database, its events into the outbox) and the ride saga's orchestrator,
built at start-up by `create_service` hooks; `Annotated` aliases for the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends

from core.app import RuntimeDep, ServiceRuntime
from core.event_sourcing import AggregateRepository, EventStore
from core.messaging import OutboxWriter
from core.runtime import RuntimeKey
from core.saga import SAGAS, SagaOrchestrator, saga_hook
from services.order.config import OrderSettings
from services.order.events import ORDER_EVENTS
from services.order.models import Base
from services.order.rules import Order, OrderRepository
from services.order.sagas import ride_saga

ORDERS = RuntimeKey("orders", AggregateRepository)
"""The running service's order repository (`runtime[ORDERS]`)."""


@asynccontextmanager
async def order_store(runtime: ServiceRuntime) -> AsyncIterator[OrderRepository]:
    store = EventStore(Base.metadata, runtime.bus.serializer, outbox=runtime.outbox,
                       topic=ORDER_EVENTS)
    yield AggregateRepository(store, Order)


@asynccontextmanager
async def ride_sagas(runtime: ServiceRuntime) -> AsyncIterator[SagaOrchestrator]:
    """The orchestrator of the ride saga, whose end moves orders through `runtime[ORDERS]`
    (so this hook comes after `order_store`)."""
    settings = runtime.settings_as(OrderSettings)
    ride = ride_saga(reserve_timeout=settings.reserve_timeout,
                     release_timeout=settings.release_timeout, orders=runtime[ORDERS])
    async with saga_hook(Base.metadata, ride)(runtime) as orchestrator:
        yield orchestrator


# `async def` though they never await: FastAPI runs a plain `def` dependency in a thread.


async def get_settings(runtime: RuntimeDep) -> OrderSettings:
    return runtime.settings_as(OrderSettings)


async def get_orders(runtime: RuntimeDep) -> OrderRepository:
    orders: OrderRepository = runtime[ORDERS]
    return orders


async def get_sagas(runtime: RuntimeDep) -> SagaOrchestrator:
    return runtime[SAGAS]


SettingsDep = Annotated[OrderSettings, Depends(get_settings)]
OrdersDep = Annotated[OrderRepository, Depends(get_orders)]
SagasDep = Annotated[SagaOrchestrator, Depends(get_sagas)]


async def get_outbox(runtime: RuntimeDep) -> OutboxWriter:
    return runtime.outbox


OutboxWriterDep = Annotated[OutboxWriter, Depends(get_outbox)]
"""The service's outbox writer: what a route adds commits with the request's session."""
