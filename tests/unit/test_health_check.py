"""Readiness: unavailable when a check the service cannot serve without fails, degraded (still
200) when only a dependency it rides out does; each check bounded by its own timeout."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from core.health_check import DegradedError, HealthChecks, reached_once


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


async def test_a_dependency_ridden_out_degrades_and_says_why() -> None:
    health = HealthChecks(timeout=0.2)
    health.add("database", _ok)
    health.add("kafka", _refused, critical=False)
    health.add("broker-wait", _hangs, critical=False)
    report = await health.run()
    assert report.status == "degraded"
    by_name = {c.name: c for c in report.checks}
    assert by_name["kafka"].status == "degraded"
    assert by_name["kafka"].error == "ConnectionRefusedError: connection refused"
    assert by_name["broker-wait"].status == "degraded"
    assert "0.2s" in str(by_name["broker-wait"].error)
    assert by_name["database"].status == "ok"
    health.add("database", _refused)
    assert (await health.run()).status == "unavailable"


async def test_a_check_may_report_degraded_itself_with_its_reason() -> None:
    async def lagging() -> None:
        raise DegradedError("out of its group for 45s with 26 records behind")

    async def note() -> str:
        return "3 routes"

    health = HealthChecks(timeout=0.2)
    health.add("consumer:user", lagging)  # critical, and still only degraded: it says so
    health.add("routes", note)
    report = await health.run()
    assert report.status == "degraded"
    by_name = {c.name: c for c in report.checks}
    assert by_name["consumer:user"].status == "degraded"
    assert by_name["consumer:user"].error == "out of its group for 45s with 26 records behind"
    assert by_name["routes"].status == "ok" and by_name["routes"].detail == "3 routes"


async def test_reached_once_fails_until_the_first_answer_then_only_degrades() -> None:
    answers: list[BaseException | None] = [ConnectionRefusedError("no log"), None,
                                           ConnectionRefusedError("log away")]

    async def registry() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    health = HealthChecks(timeout=0.2)
    health.add("registry", reached_once(registry))
    first, second, third = [await health.run() for _ in range(3)]
    assert first.status == "unavailable" and first.checks[0].status == "failing"
    assert second.status == "ready"
    assert third.status == "degraded"
    assert "log away" in str(third.checks[0].error)
    assert "last read" in str(third.checks[0].error)

    async def says_degraded() -> None:
        raise DegradedError("a check that knows better")

    health.add("registry", reached_once(says_degraded))  # before any success: as it says
    report = await health.run()
    assert report.status == "degraded" and report.checks[0].error == "a check that knows better"


async def test_degraded_answers_200_with_the_reason_unavailable_503() -> None:
    health = HealthChecks(timeout=0.2)
    health.add("database", _ok)
    health.add("kafka", _refused, critical=False)
    app = FastAPI()
    app.include_router(health.router())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://test") as http:
        degraded = await http.get("/health/ready")
        assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
        (kafka,) = [c for c in degraded.json()["checks"] if c["name"] == "kafka"]
        assert kafka["status"] == "degraded" and "refused" in kafka["error"]
        health.add("database", _refused)
        down = await http.get("/health/ready")
        assert down.status_code == 503 and down.json()["status"] == "unavailable"
