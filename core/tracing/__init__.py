"""OpenTelemetry tracing: one trace from a client's request through the gateway, the
services, the outbox and Kafka to the last handler of the last event it caused.

- `setup_tracing(settings)`: the SDK from the standard `OTEL_*` variables (`create_service`
  and the gateway call it); off unless configured (see `core.tracing.provider`).
- HTTP: FastAPI's own telemetry makes each service's server spans (`fastapi_telemetry`);
  `ServerSpans` makes the gateway's; `trace_headers` is what the service client sends.
- Kafka: `KafkaProducer` gives each traced record a PRODUCER span and its `traceparent`;
  `trace_handlers` (handler middleware) gives each handler run a CONSUMER span
  (`core.tracing.kafka`).
- Rows: `kept_traceparent` to store with a row, `resumed` to act on it later in its trace
  (a saga's steps after a deadline).
- Files: `JsonLinesSpanExporter` (`OTEL_TRACES_FILE`), `read_spans`, and
  `python -m core traces show TRACE_ID`.
"""

from core.tracing.files import JsonLinesSpanExporter, SpanRecord, read_spans
from core.tracing.http import ROUTE, ServerSpans, fastapi_telemetry, trace_headers
from core.tracing.kafka import TRACEPARENT, TRACESTATE, trace_handlers
from core.tracing.kept import kept_traceparent, resumed
from core.tracing.provider import TracingError, flush_spans, setup_tracing, tracer

__all__ = [
    "ROUTE",
    "TRACEPARENT",
    "TRACESTATE",
    "JsonLinesSpanExporter",
    "ServerSpans",
    "SpanRecord",
    "TracingError",
    "fastapi_telemetry",
    "flush_spans",
    "kept_traceparent",
    "read_spans",
    "resumed",
    "setup_tracing",
    "trace_handlers",
    "trace_headers",
    "tracer",
]
