"""Liveness and readiness: `/health/live` and `/health/ready`.

- `/health/live` answers 200 whenever the process serves HTTP at all: a failing liveness probe
  restarts the process, which only helps when the process itself is wedged.
- `/health/ready` says whether the process can serve requests. It runs every registered
  check concurrently, each under its own timeout. A check is *critical* (the service cannot
  serve without it: its database) or not (a dependency it rides out: Kafka, behind the
  outbox; the registry, from its kept table; a consumer, whose events wait in the broker).
  A failing critical check makes the answer 503 `unavailable` (a balancer then sends no
  traffic); a failing other check, or one that raises `DegradedError`, makes it 200 `degraded`,
  naming the check and why: one dependency away must not take every instance out of every
  balancer at once. The body lists each check with its status, latency and, unless ok, why.
  Checks are coroutines, so a slow dependency costs a check its timeout, never the event
  loop; a check that must call blocking code hands it to a thread itself.

Readiness is computed per request, not cached: it turns `degraded` (or 503) while Kafka or the
database is away and back to `ready` when they return, with no restart. `create_service`
registers the database (critical), the Kafka producer, the registry and each consumer; a
service adds its own with `HealthChecks.add`.
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
"""Returns when the dependency answers (a `str` it returns is reported as the check's
`detail`); raises `DegradedError` when the service serves on without it, anything else when it
does not answer."""
DEFAULT_TIMEOUT = 2.0


class DegradedError(Exception):
    """The dependency is away and the service serves on without it; the message says why."""


class CheckStatus(BaseModel):
    """One check's outcome, as `/health/ready` reports it: `failing` only for a check the
    service cannot serve without."""

    name: str
    status: Literal["ok", "degraded", "failing"]
    latency_ms: float
    error: str | None = None
    detail: str | None = None


class Readiness(BaseModel):
    """The body of `/health/ready`: `unavailable` (503) when a critical check fails,
    `degraded` (200) when only others do, else `ready` (200)."""

    status: Literal["ready", "degraded", "unavailable"]
    checks: list[CheckStatus]


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


@dataclass(frozen=True, slots=True)
class _Registered:
    check: Check
    timeout: float
    critical: bool


class HealthChecks:
    """The checks readiness is made of. Add them at start-up; `run()` is safe to call from many
    requests at once."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._checks: dict[str, _Registered] = {}

    def add(self, name: str, check: Check, *, timeout: float | None = None,
            critical: bool = True) -> None:
        """Register `check` under `name` (replacing one of that name). A failing `critical`
        check makes the service unavailable; any other only degrades it."""
        self._checks[name] = _Registered(check, timeout or self.timeout, critical)

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
        statuses = {r.status for r in results}
        status: Literal["ready", "degraded", "unavailable"] = (
            "unavailable" if "failing" in statuses else
            "degraded" if "degraded" in statuses else "ready")
        return Readiness(status=status, checks=list(results))

    @staticmethod
    async def _one(name: str, registered: _Registered) -> CheckStatus:
        started = time.perf_counter()
        error = detail = None
        degraded = not registered.critical
        try:
            answer = await asyncio.wait_for(registered.check(), registered.timeout)
            detail = answer if isinstance(answer, str) else None
        except TimeoutError:
            error = f"no answer within {registered.timeout:g}s"
        except DegradedError as exc:
            error, degraded = str(exc) or "degraded", True
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency = round((time.perf_counter() - started) * 1000, 2)
        status: Literal["ok", "degraded", "failing"] = (
            "ok" if error is None else "degraded" if degraded else "failing")
        return CheckStatus(name=name, status=status, latency_ms=latency, error=error,
                           detail=detail)

    def router(self) -> APIRouter:
        """`/health/live` and `/health/ready`, with both outcomes in the OpenAPI document."""
        router = APIRouter(prefix="/health", tags=["health"])

        @router.get("/live", response_model=Liveness)
        async def live() -> Liveness:
            return Liveness()

        @router.get("/ready", response_model=Readiness, responses={
            200: {"description": "Serving: `ready`, or `degraded` naming the checks that "
                                 "failed and why"},
            503: {"model": Readiness, "description": "Cannot serve (`unavailable`)"}})
        async def ready() -> JSONResponse:
            report = await self.run()
            return JSONResponse(report.model_dump(),
                                status_code=503 if report.status == "unavailable" else 200)

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


def reached_once(check: Check) -> Check:
    """`check`, failing until it has passed once and only `DegradedError` after that: for a
    dependency the process answers from a copy it keeps (the gateway's routing from the
    registry's table) once it has read it."""
    reached = False

    async def checked() -> object:
        nonlocal reached
        try:
            answer = await check()
        except DegradedError:
            raise
        except Exception as exc:
            if not reached:
                raise
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DegradedError(f"{reason} (serving from what it last read)") from exc
        reached = True
        return answer

    return checked


def consumer_check(consumer: EventConsumer) -> Check:
    """The consumer runs: it did not stop on an error it cannot recover from. A member out of
    its group while records wait is degraded: requests are still served, events wait."""

    async def check() -> None:
        if consumer.failure is not None:
            raise consumer.failure
        if not consumer.running:
            raise RuntimeError(f"the consumer of group {consumer.group_id} is not running")
        if consumer.stranded is not None:
            raise DegradedError(consumer.stranded)

    return check
