"""Events and helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

from click.testing import Result
from pydantic import BaseModel
from typer.testing import CliRunner

from core.commands.cli import app
from core.messaging.events import DomainEvent
from core.messaging.serialization import EventRegistry

T = TypeVar("T")


class OrderPlacedV1Data(BaseModel):
    order_id: str
    amount: int


class OrderPlacedData(BaseModel):
    order_id: str
    amount_cents: int
    currency: str
    seq: int = 0


class OrderPlacedV1(DomainEvent[OrderPlacedV1Data]):
    EVENT_TYPE = "order.placed"
    EVENT_VERSION = 1


class OrderPlaced(DomainEvent[OrderPlacedData]):
    EVENT_TYPE = "order.placed"
    EVENT_VERSION = 2


def order_registry() -> EventRegistry:
    """Knows OrderPlaced v2 and how to lift v1 (whole units, implied EUR) to it."""
    registry = EventRegistry()
    registry.register(OrderPlaced)

    @registry.upcaster("order.placed", from_version=1)
    def v1_to_v2(data: dict[str, object]) -> dict[str, object]:
        amount = data.pop("amount")
        assert isinstance(amount, int)
        return {**data, "amount_cents": amount * 100, "currency": "EUR"}

    return registry


def placed(order_id: str, seq: int = 0, amount_cents: int = 100) -> OrderPlaced:
    return OrderPlaced(
        aggregate_id=order_id,
        data=OrderPlacedData(order_id=order_id, amount_cents=amount_cents, currency="EUR",
                             seq=seq),
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@overload
async def eventually(check: Callable[[], Awaitable[T]], timeout: float = ...,
                     interval: float = ...) -> T: ...


@overload
async def eventually(check: Callable[[], T], timeout: float = ...,
                     interval: float = ...) -> T: ...


async def eventually(check: Callable[[], T | Awaitable[T]], timeout: float = 30.0,
                     interval: float = 0.05) -> T:
    """Wait until `check()` (plain or async) returns something true, and return it; fail with
    a clear message when it never does."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def cli(*args: str) -> Result:
    """`python -m core ARGS`, in-process (a worker thread: the commands run their own loop).
    A wide terminal, so table cells are not folded."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args),
                                   env={"COLUMNS": "250"})


async def answers_ok(url: str) -> bool:
    """Whether GET `url` answers 200 now (False while nothing listens there yet)."""
    import httpx

    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(url)).status_code == 200
    except httpx.TransportError:
        return False
