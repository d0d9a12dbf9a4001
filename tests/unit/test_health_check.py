"""Readiness is the conjunction of its checks, each bounded by its own timeout."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from core.health_check import HealthChecks


async def _ok() -> None:
    return None


async def _hangs() -> None:
    await asyncio.Event().wait()


async def _refused() -> None:
    raise ConnectionRefusedError("connection refused")


async def test_ready_only_when_every_check_passes() -> None:
    health = HealthChecks(timeout=0.2)
    health.add("database", _ok)
    assert (await health.run()).status == "ready"
    health.add("kafka", _refused)
    report = await health.run()
    assert report.status == "unavailable"
    failing = {c.name: c.error for c in report.checks if c.status == "failing"}
    assert failing == {"kafka": "ConnectionRefusedError: connection refused"}


async def test_a_hanging_check_costs_its_timeout_not_the_others() -> None:
    health = HealthChecks(timeout=0.2)
    health.add("slow", _hangs)
    health.add("quick", _ok)
    report = await asyncio.wait_for(health.run(), 5)
    by_name = {c.name: c for c in report.checks}
    assert by_name["slow"].status == "failing" and "0.2s" in (by_name["slow"].error or "")
    assert by_name["slow"].latency_ms >= 150
    assert by_name["quick"].status == "ok"


async def test_a_service_without_checks_has_not_started_and_is_not_ready() -> None:
    report = await HealthChecks().run()
    assert report.status == "unavailable" and report.checks[0].name == "startup"


async def test_the_routes_answer_200_or_503_and_document_both() -> None:
    health = HealthChecks(timeout=0.2)
    app = FastAPI()
    app.include_router(health.router())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://test") as http:
        assert (await http.get("/health/live")).json() == {"status": "alive"}
        assert (await http.get("/health/ready")).status_code == 503
        health.add("database", _ok)
        ready = await http.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"][0]["name"] == "database"
        health.add("kafka", _hangs)
        assert (await http.get("/health/ready")).status_code == 503
        spec = (await http.get("/openapi.json")).json()
    assert set(spec["paths"]["/health/ready"]["get"]["responses"]) >= {"200", "503"}
