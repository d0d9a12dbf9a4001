"""`core.logs`: what a line shows (time, level, logger, service, trace, correlation, the event
or request it is about, the exception, extra fields) as JSON and as readable text, where the
dispatcher and the request middleware bind their context, and how `configure_logging` routes
every library's logger through one handler."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from core import correlation, logs, serving
from core.config import Settings
from core.logs import formatters
from core.logs.context import event_fields, request_fields
from core.logs.setup import ROUTED
from core.messaging.dispatch import RecordDispatcher
from core.messaging.dlq import InMemoryDeadLetterSink
from core.messaging.handlers import HandlerRegistry
from core.messaging.idempotency import InMemoryIdempotencyStore
from core.messaging.serialization import EventSerializer
from core.messaging.types import MessageContext, Record
from core.resilience.retry import RetryPolicy
from tests.helpers import OrderPlaced, order_registry, placed


class Capture(logging.Handler):
    """Formats each record as it is emitted (in the context that logged it)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture(autouse=True)
def no_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formatters, "_identity", {})


def capture(name: str, formatter: logging.Formatter | None = None) -> tuple[logging.Logger,
                                                                            Capture]:
    logger = logging.getLogger(f"test.logs.{name}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = Capture(formatter or logs.JsonFormatter())
    logger.addHandler(handler)
    return logger, handler


def test_a_json_line_has_time_level_logger_message_and_service() -> None:
    log, out = capture("plain")
    log.info("outside anything")
    logs.identify("user", "host-1")
    log.warning("hello %s", "world")
    first, second = out.json()
    assert first["message"] == "outside anything" and "service" not in first
    assert not {"trace_id", "span_id", "correlation_id", "causation_id", "event",
                "request"} & set(first), first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", second["time"]), second
    assert {k: second[k] for k in ("level", "logger", "message", "service", "instance")} == {
        "level": "warning", "logger": "test.logs.plain", "message": "hello world",
        "service": "user", "instance": "host-1"}
    assert list(second)[:6] == ["time", "level", "logger", "message", "service", "instance"]


def test_rfc3339_is_utc_with_microseconds_across_seconds() -> None:
    assert formatters.rfc3339(0.25) == "1970-01-01T00:00:00.250000Z"
    assert formatters.rfc3339(86_401.000_001) == "1970-01-02T00:00:01.000001Z"
    assert formatters.rfc3339(0.5) == "1970-01-01T00:00:00.500000Z"


def test_a_line_carries_the_correlation_and_causation_ids_bound() -> None:
    log, out = capture("ids")
    with correlation.bound("req-1"):
        log.info("in a request")
    with correlation.bound("req-1", "evt-1"):
        log.info("in a handler")
    request, handler = out.json()
    assert request["correlation_id"] == "req-1" and "causation_id" not in request
    assert (handler["correlation_id"], handler["causation_id"]) == ("req-1", "evt-1")


def test_a_line_carries_the_trace_and_span_of_the_current_valid_span() -> None:
    log, out = capture("trace")
    span = NonRecordingSpan(SpanContext(trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
                                        span_id=0x00F067AA0BA902B7, is_remote=False,
                                        trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    with trace.use_span(span):
        log.info("traced")
    log.info("untraced")  # the default current span is invalid: no ids
    traced, untraced = out.json()
    assert (traced["trace_id"], traced["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736",
                                                       "00f067aa0ba902b7")
    assert "trace_id" not in untraced and "span_id" not in untraced


def test_an_exception_is_a_field_with_its_traceback_and_extra_fields_are_fields() -> None:
    log, out = capture("exc")
    try:
        raise ValueError("bad input")
    except ValueError:
        log.exception("failed", extra={"order_id": "o-1", "thing": object()})
    [line] = out.json()
    assert line["exception"]["type"] == "ValueError"
    assert line["exception"]["message"] == "bad input"
    assert line["exception"]["traceback"].startswith("Traceback (most recent call last):")
    assert 'raise ValueError("bad input")' in line["exception"]["traceback"]
    assert line["order_id"] == "o-1" and line["thing"].startswith("<object object")
    assert "\n" not in out.lines[0]  # one line, however long the traceback


def test_uvicorns_access_record_becomes_request_fields() -> None:
    log = logging.getLogger("uvicorn.access")
    record = log.makeRecord("uvicorn.access", logging.INFO, __file__, 1,
                            '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:5000", "GET", "/widgets?page=2", "1.1", 200), None)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request"] == {"method": "GET", "path": "/widgets?page=2", "status": 200,
                               "client": "127.0.0.1:5000"}
    assert line["message"] == '127.0.0.1:5000 - "GET /widgets?page=2 HTTP/1.1" 200'


def test_librdkafkas_record_names_its_facility_and_client() -> None:
    record = logging.getLogger("librdkafka").makeRecord(
        "librdkafka", logging.ERROR, __file__, 1, "%s [%s] %s",
        ("FAIL", "rdkafka#producer-1", "Connect to ipv4#127.0.0.1:1 failed"), None)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["kafka"] == {"facility": "FAIL", "client": "rdkafka#producer-1"}
    assert line["message"] == "FAIL [rdkafka#producer-1] Connect to ipv4#127.0.0.1:1 failed"


def _record(event: OrderPlaced, offset: int = 7) -> Record:
    value, headers = EventSerializer(order_registry()).serialize(event)
    return Record("orders", 2, offset, event.aggregate_id.encode(), value, headers)


async def test_a_handlers_lines_name_the_event_and_record_and_nothing_after() -> None:
    log, out = capture("handler")
    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced)
    async def plain(event: OrderPlaced) -> None:  # the dispatcher's fast path
        log.info("plain %s", event.aggregate_id)

    @handlers.handles(OrderPlaced)
    async def with_context(event: OrderPlaced, ctx: MessageContext) -> None:
        log.info("with context")

    dispatcher = RecordDispatcher(handlers, InMemoryIdempotencyStore(),
                                  InMemoryDeadLetterSink())
    event = placed("o-1").model_copy(update={"correlation_id": "req-9"})
    await dispatcher.process(_record(event))
    log.info("after")
    first, second, after = out.json()
    expected = {"type": OrderPlaced.EVENT_TYPE,
                "id": str(event.event_id), "topic": "orders", "partition": 2, "offset": 7}
    assert first["event"] == expected and second["event"] == expected
    assert (first["correlation_id"], first["causation_id"]) == ("req-9", str(event.event_id))
    assert "event" not in after and event_fields() is None


async def test_a_failed_attempt_unbinds_its_event_too() -> None:
    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced)
    async def fails(event: OrderPlaced) -> None:
        raise RuntimeError("no")

    dispatcher = RecordDispatcher(handlers, InMemoryIdempotencyStore(),
                                  InMemoryDeadLetterSink(),
                                  retry=RetryPolicy(max_attempts=1, initial_delay=0))
    await dispatcher.process(_record(placed("o-1")))
    assert event_fields() is None


async def test_a_requests_lines_name_its_method_path_and_route_template() -> None:
    log, out = capture("request")
    app = FastAPI()
    app.add_middleware(logs.RequestLogMiddleware)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        log.info("serving %s", item_id)
        return {"id": item_id}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/items/42")).status_code == 200
    log.info("after")
    served, after = out.json()
    assert served["request"] == {"method": "GET", "path": "/items/42",
                                 "route": "/items/{item_id}"}
    assert "request" not in after and request_fields() is None


def test_the_console_line_is_readable_with_the_same_facts() -> None:
    log, out = capture("console", logs.ConsoleFormatter(colour=False))
    with correlation.bound("req-1", "evt-1"):
        try:
            raise KeyError("k")
        except KeyError:
            log.error("it broke", extra={"order_id": "o-1"})
            log.exception("with traceback")
    plain, traced = out.lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} ERROR   test\.logs\.console \[req-1 evt-1\] "
                        r"it broke order_id=o-1", plain), plain
    assert traced.splitlines()[1] == "Traceback (most recent call last):"
    coloured, coloured_out = capture("colour", logs.ConsoleFormatter(colour=True))
    coloured.warning("careful")
    assert "\x1b[33mWARNING" in coloured_out.lines[0] and "careful" in coloured_out.lines[0]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_restored() -> Iterator[None]:
    """`configure_logging` owns the root logger: give pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    routed = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
              for name in ROUTED}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (kept, propagate) in routed.items():
        logging.getLogger(name).handlers[:] = kept
        logging.getLogger(name).propagate = propagate
    logging.captureWarnings(False)


@pytest.mark.usefixtures("root_restored")
def test_configure_logging_sends_every_librarys_logger_through_one_handler() -> None:
    access = logging.getLogger("uvicorn.access")
    access.addHandler(logging.StreamHandler(io.StringIO()))  # as uvicorn's own config does
    access.propagate = False
    stream = io.StringIO()
    logs.configure_logging(logs.LogSettings(level="debug", format="auto"), stream=stream)
    logs.configure_logging(logs.LogSettings(level="debug", format="auto"), stream=stream)
    for name in ("uvicorn.access", "uvicorn.error", "librdkafka", "sqlalchemy.engine",
                 "alembic.runtime.migration", "core.app"):
        logging.getLogger(name).warning("from %s", name)  # SQLAlchemy sets its own level: warning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # not a terminal
    assert [line["logger"] for line in lines] == [
        "uvicorn.access", "uvicorn.error", "librdkafka", "sqlalchemy.engine",
        "alembic.runtime.migration", "core.app", "py.warnings"], lines  # once each


@pytest.mark.usefixtures("root_restored")
def test_configure_logging_is_readable_in_a_terminal_and_honours_the_level() -> None:
    terminal = Terminal()
    logs.configure_logging(logs.LogSettings(level="WARNING"), stream=terminal)
    logging.getLogger("core.app").info("hidden")
    logging.getLogger("core.app").warning("shown")
    [line] = terminal.getvalue().splitlines()
    assert "shown" in line and "\x1b[" in line and not line.startswith("{")
    piped = io.StringIO()
    logs.configure_logging(logs.LogSettings(format="console"), stream=piped)
    logging.getLogger("core.app").info("plain")
    assert "\x1b[" not in piped.getvalue() and "INFO" in piped.getvalue()
    forced = Terminal()
    logs.configure_logging(logs.LogSettings(format="json"), stream=forced)
    logging.getLogger("core.app").info("machine")
    assert json.loads(forced.getvalue())["message"] == "machine"


def test_a_served_process_logs_as_log_level_and_log_format_say(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "console")
    assert serving.log_settings(Settings()) == logs.LogSettings(level="debug", format="console")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()
