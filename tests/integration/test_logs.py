"""`core.logs` in real processes: the sample service served by `core.serving.serve` with
`LOG_FORMAT=json` on real Kafka; one HTTP request with a correlation id and a `traceparent`
causes an event, and the line its handler logs says which request caused it. uvicorn's access
line and librdkafka's lines come out as JSON too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import KafkaConfig
from devinfra.process import free_port
from tests.helpers import eventually, unique
from tests.helpers.service import Spawn, serve
from tests.helpers.waiting import tail
from tests.processes import Spawner
from tests.sample_service.service import WidgetService

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every complete line of the log (the last may still be being written), each of which
    must be a JSON object."""
    lines = log.read_text().split("\n")[:-1] if log.exists() else []
    return [json.loads(line) for line in lines if line]


@dataclass(frozen=True)
class Caused:
    correlation_id: str
    widget_id: str
    log: Path


@pytest.fixture(scope="module")
async def caused(module_spawn: Spawner, kafka: Any,
                 tmp_path_factory: pytest.TempPathFactory) -> Caused:
    """One request to the served sample service, and its log once its event was handled."""
    workdir = tmp_path_factory.mktemp("logs")
    log = workdir / "sample.log"
    served = await serve(module_spawn, "tests.integration.procs.served_sample",
                         database_url=f"sqlite+aiosqlite:///{workdir / 'sample.db'}",
                         kafka=KafkaConfig(kafka.bootstrap_servers, "logs", "logs"),
                         ready_path="/widgets", output=log,
                         env={"SERVICE_NAME": "sample", "LOG_FORMAT": "json",
                              "ACCESS_LOG": "true",
                              "OTEL_TRACES_FILE": str(workdir / "spans.jsonl")})
    correlation_id = unique("logs")
    async with httpx.AsyncClient(base_url=served.base_url) as http:
        created = await http.post(
            "/widgets", json={"name": "gear", "sku": unique("SKU").upper(), "price_cents": 9},
            headers={"X-Correlation-ID": correlation_id, "traceparent": TRACEPARENT})
    assert created.status_code == 201, created.text
    widget_id = created.json()["data"]["id"]
    await eventually(lambda: any(line["message"] == f"audited widget {widget_id}"
                                 for line in json_lines(log)),
                     timeout=60, interval=0.2, what="the handler's line", log=log)
    return Caused(correlation_id, widget_id, log)


def handler_line(caused: Caused) -> dict[str, Any]:
    [line] = [line for line in json_lines(caused.log)
              if line["message"] == f"audited widget {caused.widget_id}"]
    return line


async def test_a_handler_line_carries_the_correlation_id_of_the_request_and_its_event(
        caused: Caused) -> None:
    line = handler_line(caused)
    assert line["logger"] == "tests.sample_service.app" and line["level"] == "info", line
    assert line["correlation_id"] == caused.correlation_id, line
    assert line["service"] == "sample" and line["instance"], line
    event = line["event"]
    assert event["type"] == "widget.created" and event["topic"] == WidgetService.events_topic
    assert line["causation_id"] == event["id"], line
    assert isinstance(event["partition"], int) and isinstance(event["offset"], int), line
    assert line["time"].endswith("Z") and line["time"][10] == "T", line


async def test_a_handler_line_carries_the_trace_id_of_the_request(caused: Caused) -> None:
    line = handler_line(caused)
    assert line.get("trace_id") == TRACE_ID, line
    assert len(line.get("span_id", "")) == 16, line


async def test_uvicorns_access_line_is_json_with_the_method_route_and_status(
        caused: Caused) -> None:
    [access] = [line for line in json_lines(caused.log)
                if line["logger"] == "uvicorn.access" and line["request"]["method"] == "POST"]
    assert access["request"]["route"] == "/widgets" and access["request"]["status"] == 201
    assert access["correlation_id"] == caused.correlation_id, access
    # uvicorn's own lines, through the same path
    assert any(line["logger"] == "uvicorn.error" for line in json_lines(caused.log))


async def test_librdkafka_lines_come_through_the_same_path(spawn: Spawn, tmp_path: Path) -> None:
    log = tmp_path / "unreachable.log"
    spawn("tests.integration.procs.unreachable_kafka", f"127.0.0.1:{free_port()}",
          env={"LOG_FORMAT": "json"}, output=log)
    line = await eventually(
        lambda: next((line for line in json_lines(log) if line["logger"] == "librdkafka"), None),
        timeout=30, interval=0.2, what="a librdkafka line", log=log)
    assert line["kafka"]["client"].startswith("unreachable"), line
    assert line["kafka"]["facility"] and "Connect" in line["message"], line



async def test_worker_processes_log_through_the_same_path(spawn: Spawn, tmp_path: Path) -> None:
    """`GATEWAY_WORKERS > 1`: uvicorn spawns fresh interpreters, which configure their logging
    from the `LogSettings` pickled with their config."""
    port, log = free_port(), tmp_path / "server.log"
    proc = spawn("tests.integration.procs.worker_logs", str(port), output=log)

    async def served() -> bool:
        assert proc.poll() is None, tail(log)
        try:
            async with httpx.AsyncClient() as http:
                await http.get(f"http://127.0.0.1:{port}/hello", timeout=1)
        except httpx.TransportError:
            return False
        return any(line["logger"] == "worker_app" for line in json_lines(log))

    await eventually(served, timeout=60, interval=0.2, what="a worker's line", log=log)
    lines = json_lines(log)  # every line, the supervisor's and the workers', is JSON
    assert any(line["logger"] == "uvicorn.access" and line["request"]["status"] == 200
               for line in lines), lines
    assert any(line["logger"] == "uvicorn.error" for line in lines), lines
