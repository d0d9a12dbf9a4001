"""core.tracing in one process, spans recorded in memory: the PRODUCER span a record gets and
the `traceparent` it carries, the one an outbox row keeps, the CONSUMER span around a handler
run (through the real dispatcher), the server spans (FastAPI's own, the gateway's), the
service client's `traceparent`, a saga's commands after a deadline, the settings, and the
JSON-lines file with `traces show`.
Across real processes and Kafka: tests/e2e/test_tracing.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from core.config import Settings
from core.db import Database
from core.messaging.dispatch import Outcome, RecordDispatcher
from core.messaging.dlq import InMemoryDeadLetterSink
from core.messaging.handlers import HandlerRegistry
from core.messaging.idempotency import InMemoryIdempotencyStore
from core.messaging.outbox import OutboxWriter
from core.messaging.serialization import EventSerializer
from core.messaging.types import Headers, MessageContext, Record
from core.resilience.retry import RetryPolicy
from core.saga import SagaOrchestrator
from core.tracing import (
    ROUTE,
    TRACEPARENT,
    JsonLinesSpanExporter,
    ServerSpans,
    TracingError,
    fastapi_telemetry,
    read_spans,
    trace_handlers,
    trace_headers,
    tracer,
)
from core.tracing.kafka import traced_batch, traced_send
from core.tracing.provider import exporters
from core.tracing.testing import recording
from tests import saga_rig
from tests.helpers import OrderPlaced, eventually, order_registry, placed
from tests.helpers.cli import cli
from tests.outbox_service import create_schema, deposit, metadata, registry
from tests.unit.test_service_client import answering, make

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARENT_TRACE, PARENT_SPAN = int("0af7651916cd43dd8448eb211c80319c", 16), int("b7ad6b7169203331", 16)


def traceparent(headers: Headers) -> str:
    """The trace and span ids of the one `traceparent` in `headers`."""
    [value] = [v.decode() for k, v in headers if k == TRACEPARENT]
    return named(value)


def named(value: str) -> str:
    """`trace-span` of a `traceparent` value (its flags aside)."""
    version, trace_id, span_id, _ = value.split("-")
    assert version == "00"
    return f"{trace_id}-{span_id}"


def ids(span: ReadableSpan) -> str:
    """`trace-span` of a span."""
    assert span.context is not None
    return f"{span.context.trace_id:032x}-{span.context.span_id:016x}"


def traced() -> trace.Tracer:
    """Core's tracer, inside `recording()`."""
    found = tracer()
    assert found is not None
    return found


class Sender:
    """A producer's `_queue`: keeps what it was given, returns the acknowledgement future."""

    def __init__(self) -> None:
        self.sent: list[Headers | None] = []
        self.acks: list[asyncio.Future[Any]] = []

    def __call__(self, topic: str, value: bytes | None, key: bytes | str | None,
                 headers: Headers | None) -> asyncio.Future[Any]:
        self.sent.append(headers)
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


async def test_a_record_sent_in_a_trace_carries_its_producer_span_ended_at_the_ack() -> None:
    send = Sender()
    with recording() as spans:
        spans_tracer = traced()
        with spans_tracer.start_as_current_span("request") as request:
            ack = traced_send(send, "orders", b"v", b"k", [("event_type", b"x")])
        assert spans.get_finished_spans()[-1].name == "request"  # not ended before the ack
        ack.set_result(None)
        await asyncio.sleep(0)
        *_, produced = spans.get_finished_spans()
    assert produced.kind is SpanKind.PRODUCER and produced.name == "send orders"
    assert produced.parent is not None
    assert produced.parent.span_id == request.get_span_context().span_id
    [headers] = send.sent
    assert headers is not None and ("event_type", b"x") in headers
    assert traceparent(headers) == ids(produced)


async def test_a_traceparent_in_the_headers_is_the_parent_and_is_replaced_not_repeated() -> None:
    send = Sender()
    with recording() as spans:
        ack = traced_send(send, "orders", b"v", None, [(TRACEPARENT, PARENT.encode())])
        ack.set_exception(RuntimeError("refused"))
        await asyncio.sleep(0)
        [produced] = spans.get_finished_spans()
    assert produced.context is not None and produced.context.trace_id == PARENT_TRACE
    assert produced.parent is not None and produced.parent.span_id == PARENT_SPAN
    assert produced.status.status_code is StatusCode.ERROR
    [headers] = send.sent
    assert headers is not None and traceparent(headers) == ids(produced)


async def test_outside_a_trace_or_with_tracing_off_a_record_is_sent_as_it_is() -> None:
    send = Sender()
    given: Headers = [("a", b"1")]
    with recording() as spans:
        traced_send(send, "registry", b"v", None, given)  # a heartbeat: no trace
        assert spans.get_finished_spans() == ()
    traced_send(send, "orders", b"v", None, [(TRACEPARENT, PARENT.encode())])  # off
    assert send.sent == [given, [(TRACEPARENT, PARENT.encode())]]


async def test_a_batch_gives_each_record_its_span_ended_with_the_batch() -> None:
    got: list[Any] = []

    async def send(topic: str, records: Any) -> None:
        got.extend(records)

    with recording() as spans:
        await traced_batch(send, "orders", [(b"1", None, [(TRACEPARENT, PARENT.encode())]),
                                            (b"2", None, [])])
        [produced] = spans.get_finished_spans()
    assert traceparent(got[0][2]) == ids(produced)
    assert got[1] == (b"2", None, [])


async def test_the_outbox_row_keeps_the_traceparent_of_the_span_it_was_written_in(
        tmp_path: Path) -> None:
    db = await create_schema(f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}")
    writer = OutboxWriter(metadata, EventSerializer(registry()))
    outbox = metadata.tables["outbox"]
    try:
        with recording():
            with traced().start_as_current_span("POST /accounts") as request:
                async with db.transaction() as session:
                    await writer.add(session, "accounts", deposit("a-1", 1))
                    await writer.add(session, "accounts", deposit("a-2", 1),
                                     headers=[(TRACEPARENT, PARENT.encode())])
            async with db.transaction() as session:  # outside any span
                await writer.add(session, "accounts", deposit("a-3", 1))
        async with db.transaction() as session:
            rows = (await session.execute(select(outbox.c.headers).order_by(outbox.c.id))).all()
    finally:
        await db.dispose()
    kept = [[named(value) for name, value in row.headers if name == TRACEPARENT] for row in rows]
    context = request.get_span_context()
    assert kept == [[f"{context.trace_id:032x}-{context.span_id:016x}"], [named(PARENT)], []]


def _record(event: OrderPlaced, headers: Headers = ()) -> Record:  # type: ignore[assignment]
    value, envelope = EventSerializer(order_registry()).serialize(event)
    return Record("orders", 2, 7, event.aggregate_id.encode(), value, [*envelope, *headers])


async def test_each_handler_run_is_a_consumer_span_current_inside_the_handler() -> None:
    handlers = HandlerRegistry(order_registry())
    seen: list[int] = []
    attempts: list[int] = []

    @handlers.handles(OrderPlaced, name="h")
    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")

    run = RecordDispatcher(handlers, InMemoryIdempotencyStore(), InMemoryDeadLetterSink(),
                           retry=RetryPolicy(max_attempts=2, initial_delay=0),
                           middleware=[trace_handlers])
    with recording() as spans:
        event = placed("o-1")
        assert await run.process(_record(event, [(TRACEPARENT, PARENT.encode())])) \
            is Outcome.HANDLED
        assert await run.process(_record(placed("o-2"))) is Outcome.HANDLED
        failed, handled, alone, _ = spans.get_finished_spans()
    for span in (failed, handled):
        assert span.kind is SpanKind.CONSUMER and span.name == "process orders order.placed"
        assert span.parent is not None and span.parent.span_id == PARENT_SPAN
        assert span.attributes is not None
        assert span.attributes["messaging.message.id"] == str(event.event_id)
        assert span.attributes["messaging.kafka.offset"] == 7
        assert span.attributes["handler"] == "h"
    assert failed.status.status_code is StatusCode.ERROR
    assert handled.status.status_code is StatusCode.UNSET
    assert [s.context.span_id for s in (failed, handled)] == seen[:2]  # type: ignore[union-attr]
    assert alone.parent is None  # no traceparent: a trace of its own


async def test_fastapi_makes_server_spans_named_by_route_continuing_the_callers_trace() -> None:
    with recording() as spans:
        app = FastAPI(telemetry=fastapi_telemetry())  # type: ignore[arg-type]

        @app.get("/items/{item_id}")
        async def item(item_id: str) -> dict[str, list[tuple[str, str]]]:
            return {"headers": trace_headers()}

        @app.get("/health/live")
        async def live() -> dict[str, str]:
            return {}

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://svc") as client:
            answer = await client.get("/items/42", headers={"traceparent": PARENT})
            await client.get("/health/live")
        [server] = spans.get_finished_spans()
    assert server.name == "GET /items/{item_id}" and server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.span_id == PARENT_SPAN
    [(name, value)] = answer.json()["headers"]
    assert name == "traceparent" and named(value) == ids(server)


async def test_the_gateways_server_span_continues_the_client_and_forwards_its_own() -> None:
    forwarded: list[Any] = []

    async def gateway(scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE] = "/api/auth"
        forwarded.append((trace_headers(), list(scope["headers"])))
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with recording() as spans:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ServerSpans(gateway)),
                                     base_url="http://gw") as client:
            await client.post("/api/auth/register", headers={"traceparent": PARENT})
            await client.get("/health/ready")
        [server] = spans.get_finished_spans()
    assert server.name == "POST /api/auth" and server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.span_id == PARENT_SPAN
    assert server.status.status_code is StatusCode.ERROR  # a 5xx
    (headers, scope_headers), (untraced, _) = forwarded
    [(name, value)] = headers
    assert name == "traceparent" and named(value) == ids(server)
    assert all(name != b"traceparent" for name, _ in scope_headers)  # not the client's too
    assert untraced == []


async def test_the_service_client_sends_the_current_spans_traceparent() -> None:
    client, transport = make(answering(200))
    with recording() as spans:
        spans_tracer = traced()
        with spans_tracer.start_as_current_span("handler") as span:
            await client.get("b", "/x")
        await client.get("b", "/y")
    called, untraced = transport.sent
    context = span.get_span_context()
    assert named(called.headers["traceparent"]) == f"{context.trace_id:032x}-{context.span_id:016x}"
    assert "traceparent" not in untraced.headers
    assert spans.get_finished_spans()


def test_tracing_is_off_unless_an_exporter_or_a_file_is_named(tmp_path: Path) -> None:
    assert exporters(Settings()) == []
    assert exporters(Settings(otel_traces_exporter="none")) == []
    [found] = exporters(Settings(otel_traces_file=str(tmp_path / "t.jsonl")))
    assert isinstance(found, JsonLinesSpanExporter)
    assert [type(e).__name__ for e in exporters(Settings(otel_traces_exporter="otlp,console"))] \
        == ["OTLPSpanExporter", "ConsoleSpanExporter"]
    with pytest.raises(TracingError, match="jaeger"):
        exporters(Settings(otel_traces_exporter="jaeger"))


async def test_spans_written_to_the_file_are_shown_as_a_tree(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    with recording("auth") as spans:
        spans_tracer = traced()
        with spans_tracer.start_as_current_span("POST /api/auth") as root:
            with spans_tracer.start_as_current_span("send auth.events"):
                pass
            with spans_tracer.start_as_current_span("process auth.events"):
                with spans_tracer.start_as_current_span("send user.events"):
                    pass
        with spans_tracer.start_as_current_span("another trace"):
            pass
        finished = spans.get_finished_spans()
    exporter = JsonLinesSpanExporter(path)
    exporter.export(finished[:3])
    exporter.export(finished[3:])
    exporter.shutdown()
    with path.open("a") as file:
        file.write('{"cut short')
    trace_id = f"{root.get_span_context().trace_id:032x}"
    assert [s.name for s in read_spans([path], trace_id)] == [
        "POST /api/auth", "send auth.events", "process auth.events", "send user.events"]

    shown = await cli("traces", "show", trace_id, "--file", str(path))
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.output.splitlines() if "auth" in line or "user" in line]
    names = ["POST /api/auth", "send auth.events", "process auth.events", "send user.events"]
    depth = [next(line.index(n) for line in lines if n in line) for n in names]
    assert depth[0] < depth[1] == depth[2] < depth[3], shown.output
    assert "another trace" not in shown.output

    missing = await cli("traces", "show", "0" * 32, "--file", str(path))
    assert missing.exit_code == 1 and "no spans" in missing.output


async def test_a_sagas_commands_continue_the_trace_it_began_in_even_after_a_deadline(
        tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'sagas.db'}")
    async with db.engine.begin() as conn:
        await conn.run_sync(saga_rig.metadata.create_all)
    orchestrator = SagaOrchestrator(
        db, OutboxWriter(saga_rig.metadata, EventSerializer(saga_rig.events())), saga_rig.tables,
        [saga_rig.trip_saga("trips", "trips.replies", timeout=0.01)])
    outbox = saga_rig.metadata.tables["outbox"]
    try:
        with recording() as spans:
            with traced().start_as_current_span("POST /trips") as request:
                async with db.transaction() as session:
                    await orchestrator.begin(session, "trip", saga_rig.TripData(trip="t-1"))
            # Later, outside any trace: the seat step's reply is overdue, its release goes out.
            await eventually(orchestrator.sweep, timeout=5, interval=0.02)
            [deadline] = [s for s in spans.get_finished_spans() if s.name == "saga trip deadline"]
        async with db.transaction() as session:
            rows = (await session.execute(select(outbox.c.headers).order_by(outbox.c.id))).all()
    finally:
        await db.dispose()
    reserve, release = ([named(v) for k, v in row.headers if k == TRACEPARENT] for row in rows)
    context = request.get_span_context()
    assert reserve == [f"{context.trace_id:032x}-{context.span_id:016x}"]
    assert deadline.parent is not None and deadline.parent.span_id == context.span_id
    assert release == [ids(deadline)]


async def test_a_trace_sampled_out_upstream_makes_no_spans_and_passes_the_decision_on() -> None:
    unsampled = PARENT[:-2] + "00"
    send = Sender()
    handlers = HandlerRegistry(order_registry())
    inside: list[trace.SpanContext] = []

    @handlers.handles(OrderPlaced, name="h")
    async def handle(event: OrderPlaced) -> None:
        inside.append(trace.get_current_span().get_span_context())
        traced_send(send, "next", b"v", None, [])  # what the handler sends on

    run = RecordDispatcher(handlers, InMemoryIdempotencyStore(), InMemoryDeadLetterSink(),
                           middleware=[trace_handlers])
    with recording() as spans:
        traced_send(send, "orders", b"v", None, [(TRACEPARENT, unsampled.encode())])
        assert await run.process(_record(placed("o-1"), [(TRACEPARENT, unsampled.encode())])) \
            is Outcome.HANDLED
        assert spans.get_finished_spans() == ()
    [context] = inside
    assert context.trace_id == PARENT_TRACE and not context.trace_flags.sampled
    first, passed_on = send.sent
    assert first == [(TRACEPARENT, unsampled.encode())]
    assert passed_on is not None and traceparent(passed_on) == named(unsampled)
    assert next(v for k, v in passed_on if k == TRACEPARENT).decode().endswith("-00")
