"""Running a service's app as a process: `serve("services.user.main:create_app")`.

The app is built by its factory inside uvicorn (nothing is built at import, so tests import the
same module and build apps with their own settings). Host and port come from the settings
(`SERVICE_HOST`, `SERVICE_PORT`), which the registry also advertises, so the two cannot
disagree. The client address is the gateway's `X-Forwarded-For` when the peer is one of
`FORWARDED_ALLOW_IPS` (validated by core.config), the peer's own otherwise.

Every server of the platform (services, the gateway, the tests' stand-ins) runs through `run`:
uvicorn with `core.server_protocol`'s protocol, which bounds a request head in size and time
before it is parsed and closes lingering (see there why).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from core.config import Settings, get_settings
from core.correlation import CorrelationLogFilter
from core.server_protocol import ServerLimits

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CORRELATED_LOG_FORMAT = ("%(asctime)s %(levelname)s %(name)s "
                         "[%(correlation_id)s %(causation_id)s]: %(message)s")
"""`LOG_FORMAT` with the correlation and causation ids (`-` where none is bound); only for
handlers that have a `CorrelationLogFilter`, which `configure_logging` adds."""
PROTOCOL = "core.server_protocol:BoundedHttpToolsProtocol"
"""By import path, so a worker process started by `workers > 1` finds it."""

__all__ = ["CORRELATED_LOG_FORMAT", "LOG_FORMAT", "WORKER_HEALTHCHECK_SECONDS", "ServerConfig",
           "ServerLimits", "configure_logging", "run", "serve"]


class ServerConfig(uvicorn.Config):
    """uvicorn's config carrying the `ServerLimits` the protocol reads (pickled along to
    worker processes with the rest)."""

    def __init__(self, app: Any, *, server_limits: ServerLimits, **options: Any) -> None:
        super().__init__(app, http=PROTOCOL, **options)
        self.server_limits = server_limits


WORKER_HEALTHCHECK_SECONDS = 30
"""How long uvicorn's supervisor waits for a worker process to answer its ping before it kills
and replaces it. uvicorn's default, 5 s, includes the worker's start (a spawned interpreter
importing the app): on a loaded machine or a CPU-throttled container that takes longer, and
every replacement is killed the same way, so the server never serves (seen: load 12 on 2
cores). A worker truly hung is still replaced, 30 s later."""


def run(app: Any, *, host: str, port: int, limits: ServerLimits | None = None,
        workers: int = 1, **options: Any) -> None:
    """`uvicorn.run(app, ...)` with the bounded protocol. `app` is an ASGI app, or an import
    string (needed for `workers > 1`); `options` are uvicorn's."""
    options.setdefault("timeout_worker_healthcheck", WORKER_HEALTHCHECK_SECONDS)
    config = ServerConfig(app, server_limits=limits or ServerLimits(), host=host, port=port,
                          workers=workers, **options)
    server = uvicorn.Server(config)
    if workers > 1:
        # Imported here: a server of one worker (the tests' stand-ins) need not load the
        # messaging and database layers core.metrics reads.
        from core.metrics import prepare_multiprocess

        prepare_multiprocess()  # the workers' counters, summed by whichever answers /metrics
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the app did not start


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stdout, each line with the correlation and causation ids of the request or the
    handled event it was logged for (`core.correlation`)."""
    logging.basicConfig(stream=sys.stdout, level=level, format=CORRELATED_LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, CorrelationLogFilter) for f in handler.filters):
            handler.addFilter(CorrelationLogFilter())


def serve(factory: str, settings: Settings | None = None) -> None:
    """Serve the app `factory` ("package.module:function", no arguments) until SIGINT or
    SIGTERM, which drain it through its lifespan (deregister, consumers, relay, database)."""
    cfg = settings or get_settings()
    configure_logging()
    run(factory, factory=True, host=cfg.service_host, port=cfg.service_port,
        log_level="info", access_log=False, timeout_graceful_shutdown=20,
        proxy_headers=True, forwarded_allow_ips=cfg.forwarded_allow_ips)
