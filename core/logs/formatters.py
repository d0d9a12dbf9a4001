"""Log records as JSON lines (for machines: ELK, Loki) or readable lines (for a terminal).

Both show the same facts: when, how bad, which logger, the message, which service instance
(`identify`), the current trace and span (OpenTelemetry, when a span is recording), the
correlation and causation ids (`core.correlation`), the event being handled or the request
being served (`core.logs.context`), the exception with its traceback, and any `extra=` fields.
Context is read when the record is formatted, so a handler must format on the thread and in
the context that logged (the stream handler `configure_logging` installs does).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from contextvars import ContextVar
from typing import Any

from core import correlation
from core.logs.context import event_fields, request_fields

try:
    from opentelemetry import trace as _otel
except ImportError:  # pragma: no cover - opentelemetry-api is a dependency; keep logs without it
    _otel = None  # type: ignore[assignment]

__all__ = ["ConsoleFormatter", "JsonFormatter", "identify", "identity_scope", "rfc3339"]

_identity: dict[str, str] = {}
_scoped: ContextVar[dict[str, str] | None] = ContextVar("kfm_log_identity", default=None)

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
    "correlation_id", "causation_id",  # CorrelationLogFilter's, shown as context already
    "color_message",  # uvicorn's coloured copy of the message
}
"""Attributes every record has: the rest came through `extra=` and is shown as fields."""


def identify(service: str, instance: str | None = None) -> None:
    """Name the service (and instance) on every line from now on: process-wide, a process
    being one instance. `serve` names the service as the process starts, `create_service`
    and the gateway both as their app starts. Inside an `identity_scope`, names that scope's
    service instead (several services in one process)."""
    identity = _current()
    identity.clear()
    identity["service"] = service
    if instance is not None:
        identity["instance"] = instance


def identity_scope(service: str) -> None:
    """Name `service` on the lines logged from the current context and every task it starts
    from now on (one process running several services: each server's task calls this before
    it serves, so its requests, consumers and lifespan inherit it); `identify` called under it
    updates this scope, not the process's identity."""
    _scoped.set({"service": service})


def _current() -> dict[str, str]:
    scoped = _scoped.get()
    return _identity if scoped is None else scoped


_second = -1
_second_text = ""


def rfc3339(created: float) -> str:
    """`created` (seconds since the epoch) as RFC 3339 in UTC with microseconds; the part up
    to the second is formatted once per second."""
    global _second, _second_text
    whole = int(created)
    if whole != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = whole
    micros = min(round((created - whole) * 1_000_000), 999_999)  # a float's 0.0000009999
    return f"{_second_text}.{micros:06d}Z"


def trace_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in W3C hex, or None with no valid span."""
    if _otel is None:
        return None
    span = _otel.get_current_span().get_span_context()
    if not span.is_valid:
        return None
    return format(span.trace_id, "032x"), format(span.span_id, "016x")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """Everything a line shows about `record`, in the order a JSON line has it."""
    out: dict[str, Any] = {
        "time": rfc3339(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
        **_current(),
    }
    ids = trace_ids()
    if ids is not None:
        out["trace_id"], out["span_id"] = ids
    bound = correlation.current()
    if bound is not None:
        out["correlation_id"] = bound.correlation_id
        if bound.causation_id is not None:
            out["causation_id"] = bound.causation_id
    event = event_fields()
    if event is not None:
        out["event"] = event
    request = request_fields()
    if request is not None or record.name == "uvicorn.access":
        out["request"] = _access(record, request or {})
    if record.name == "librdkafka" and isinstance(record.args, tuple) and len(record.args) == 3:
        # confluent-kafka logs `"%s [%s] %s", facility, client name, text`
        out["kafka"] = {"facility": record.args[0], "client": record.args[1]}
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        out["exception"] = {"type": type(exc).__qualname__, "message": str(exc),
                            "traceback": "".join(traceback.format_exception(exc))}
    elif record.exc_text:
        out["exception"] = {"traceback": record.exc_text}
    if record.stack_info:
        out["stack"] = record.stack_info
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in out:
            out[key] = value
    return out


def _access(record: logging.LogRecord, request: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's access line logs `client, method, path, http version, status`: as fields."""
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) \
            and len(record.args) == 5:
        client, method, path, _, status = record.args
        return {**request, "method": method, "path": path, "status": status,
                "client": client}
    return request


_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
"""Built once: `json.dumps` with options builds an encoder per call (a third of its time)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot hold are written as their `str`."""

    def format(self, record: logging.LogRecord) -> str:
        return _encode(fields(record))


_COLOURS = {"debug": "\x1b[2m", "info": "\x1b[32m", "warning": "\x1b[33m",
            "error": "\x1b[31m", "critical": "\x1b[1;31m"}
_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_SHOWN = ("time", "level", "logger", "message", "exception", "service", "instance")


class ConsoleFormatter(logging.Formatter):
    """`12:31:26.123 INFO  logger [correlation cause] message key=value ...`, coloured when
    `colour` (a terminal), the traceback under the line."""

    def __init__(self, colour: bool = True) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        out = fields(record)
        level = out["level"]
        ids = ""
        if "correlation_id" in out:
            ids = f" [{out['correlation_id']} {out.get('causation_id', '-')}]"
        rest = " ".join(f"{key}={_short(value)}" for key, value in out.items()
                        if key not in _SHOWN and key not in ("correlation_id", "causation_id"))
        clock = out["time"][11:23]
        if self.colour:
            line = (f"{_DIM}{clock}{_RESET} {_COLOURS.get(level, '')}{level.upper():<8}{_RESET}"
                    f"{_DIM}{record.name}{ids}{_RESET} {out['message']}")
            if rest:
                line += f" {_DIM}{rest}{_RESET}"
        else:
            line = f"{clock} {level.upper():<8}{record.name}{ids} {out['message']}"
            if rest:
                line += f" {rest}"
        scoped = _scoped.get()
        if scoped is not None:  # several services in one process: say whose line it is
            line = f"{scoped.get('service', ''):>12} \u2502 {line}"
        exc = out.get("exception")
        if exc is not None:
            line += "\n" + exc["traceback"].rstrip("\n")
        return line


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)
