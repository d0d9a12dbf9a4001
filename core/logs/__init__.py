"""Structured logs: JSON lines with the service, trace, correlation and the event or request
each line is about; readable lines in a terminal. See docs/observability.md, "Logs"."""

from core.logs.access import RequestLogMiddleware
from core.logs.context import bind_event, bind_request, unbind_event, unbind_request
from core.logs.formatters import ConsoleFormatter, JsonFormatter, identify
from core.logs.setup import LogFormat, LogSettings, configure_logging

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "LogFormat",
    "LogSettings",
    "RequestLogMiddleware",
    "bind_event",
    "bind_request",
    "configure_logging",
    "identify",
    "unbind_event",
    "unbind_request",
]
