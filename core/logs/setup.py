"""Where log lines go: one handler on the root logger, every library's logger through it.

`configure_logging` runs once as a process starts (`core.serving.serve`, the gateway, and
each uvicorn worker process through `core.serving.ServerConfig`). Library loggers that bring
handlers of their own (uvicorn's) lose them and propagate to the root, so uvicorn's lines,
librdkafka's (confluent-kafka's `logger`, see core.messaging.kafka_client), SQLAlchemy's,
Alembic's and `warnings` all come out formatted alike. Calling it again replaces the handler.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import IO, Literal

from core.logs.formatters import ConsoleFormatter, JsonFormatter

LogFormat = Literal["auto", "json", "console"]
"""`auto`: readable lines when the stream is a terminal, JSON lines otherwise."""

ROUTED = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "librdkafka",
          "sqlalchemy", "alembic")
"""Loggers that must reach the root handler even if their library gave them their own."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How a process logs (`LOG_LEVEL`, `LOG_FORMAT`); picklable, so uvicorn's worker
    processes get it with their config."""

    level: str | int = "INFO"
    format: LogFormat = "auto"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure_logging` installs, so a second call finds and replaces it."""


def configure_logging(settings: LogSettings | None = None, stream: IO[str] | None = None) -> None:
    """Send every log line of the process to `stream` (stdout) as `settings` say; the root
    logger's other handlers are removed (the process's entry point owns its logging)."""
    settings = settings or LogSettings()
    stream = stream if stream is not None else sys.stdout
    terminal = stream.isatty()
    fmt = settings.format
    if fmt == "auto":
        fmt = "console" if terminal else "json"
    handler = _Handler(stream)
    handler.setFormatter(ConsoleFormatter(colour=terminal) if fmt == "console"
                         else JsonFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper() if isinstance(settings.level, str) else settings.level)
    for name in ROUTED:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)
