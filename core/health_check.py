"""Liveness and readiness: `/health/live` and `/health/ready`.

- `/health/live` answers 200 whenever the process serves HTTP at all: a failing liveness probe
  restarts the process, which only helps when the process itself is wedged.
- `/health/ready` runs every registered check concurrently, each under its own timeout, and
  answers 200 only when all pass, 503 otherwise (a load balancer then sends no traffic). The
  body lists each check with its status, latency and, when it failed, why. Checks are
  coroutines, so a slow dependency costs a check its timeout, never the event loop; a check
  that must call blocking code hands it to a thread itself.

Readiness is computed per request, not cached: it flips to 503 while Kafka or the database is
away and back to 200 when they return, with no restart. `create_service` registers the
database, the Kafka producer and each consumer (a consumer that stopped on an error it cannot
recover from is not ready); a service adds its own with `HealthChecks.add`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from core.db.engine import Database
from core.messaging.consumer import EventConsumer
from core.messaging.kafka_client import KafkaProducer

Check = Callable[[], Awaitable[object]]
"""Returns (anything) when the dependency answers; raises when it does not."""
DEFAULT_TIMEOUT = 2.0


class CheckStatus(BaseModel):
    """One check's outcome, as `/health/ready` reports it."""

    name: str
    status: Literal["ok", "failing"]
    latency_ms: float
    error: str | None = None


class Readiness(BaseModel):
    """The body of `/health/ready`: ready only when every check is ok."""

    status: Literal["ready", "unavailable"]
    checks: list[CheckStatus]


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


@dataclass(frozen=True, slots=True)
class _Registered:
    check: Check
    timeout: float


class HealthChecks:
    """The checks readiness is made of. Add them at start-up; `run()` is safe to call from many
    requests at once."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._checks: dict[str, _Registered] = {}

    def add(self, name: str, check: Check, *, timeout: float | None = None) -> None:
        """Register `check` under `name` (replacing one of that name)."""
        self._checks[name] = _Registered(check, timeout or self.timeout)

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self) -> Readiness:
        """Run every check at once; a service with no checks yet (still starting) is not
        ready."""
        if not self._checks:
            return Readiness(status="unavailable", checks=[
                CheckStatus(name="startup", status="failing", latency_ms=0.0,
                            error="the service has not finished starting")])
        results = await asyncio.gather(*(self._one(name, registered)
                                         for name, registered in self._checks.items()))
        ready = all(r.status == "ok" for r in results)
        return Readiness(status="ready" if ready else "unavailable", checks=list(results))

    @staticmethod
    async def _one(name: str, registered: _Registered) -> CheckStatus:
        started = time.perf_counter()
        error = None
        try:
            await asyncio.wait_for(registered.check(), registered.timeout)
        except TimeoutError:
            error = f"no answer within {registered.timeout:g}s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency = round((time.perf_counter() - started) * 1000, 2)
        return CheckStatus(name=name, status="ok" if error is None else "failing",
                           latency_ms=latency, error=error)

    def router(self) -> APIRouter:
        """`/health/live` and `/health/ready`, with both outcomes in the OpenAPI document."""
        router = APIRouter(prefix="/health", tags=["health"])

        @router.get("/live", response_model=Liveness)
        async def live() -> Liveness:
            return Liveness()

        @router.get("/ready", response_model=Readiness,
                    responses={503: {"model": Readiness, "description": "Not ready"}})
        async def ready() -> JSONResponse:
            report = await self.run()
            return JSONResponse(report.model_dump(),
                                status_code=200 if report.status == "ready" else 503)

        return router


def database_check(db: Database) -> Check:
    """The database answers a trivial query (a connection from the pool, `SELECT 1`)."""

    async def check() -> None:
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def kafka_check(producer: KafkaProducer, timeout: float = DEFAULT_TIMEOUT) -> Check:
    """A broker answers a metadata request from the producer the service publishes with."""

    async def check() -> None:
        await producer.topic_exists("__health", timeout=timeout * 0.75)

    return check


def consumer_check(consumer: EventConsumer) -> Check:
    """The consumer runs: it did not stop on an error it cannot recover from."""

    async def check() -> None:
        if consumer.failure is not None:
            raise consumer.failure
        if not consumer.running:
            raise RuntimeError(f"the consumer of group {consumer.group_id} is not running")

    return check
