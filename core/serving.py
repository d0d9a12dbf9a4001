"""Running a service's app as a process: `serve("services.user.main:create_app")`.

The app is built by its factory inside uvicorn (nothing is built at import, so tests import the
same module and build apps with their own settings). Host and port come from the settings
(`SERVICE_HOST`, `SERVICE_PORT`), which the registry also advertises, so the two cannot
disagree. The client address is the gateway's `X-Forwarded-For` when the peer is one of
`FORWARDED_ALLOW_IPS` (validated by core.config), the peer's own otherwise.

Every server of the platform (services, the gateway, the tests' stand-ins) runs through `run`:
uvicorn with `core.server_protocol`'s protocol, which bounds a request head in size and time
before it is parsed and closes lingering (see there why). Given `LogSettings`, the server's
process and each of its worker processes log through `core.logs` (uvicorn's own lines too: its
logging config is not applied), the level and format from `LOG_LEVEL` and `LOG_FORMAT`.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from core import logs
from core.config import Settings, get_settings
from core.server_protocol import ServerLimits

PROTOCOL = "core.server_protocol:BoundedHttpToolsProtocol"
"""By import path, so a worker process started by `workers > 1` finds it."""

__all__ = ["WORKER_HEALTHCHECK_SECONDS", "ServerConfig", "ServerLimits", "configure_logging",
           "log_settings", "run", "serve"]


class ServerConfig(uvicorn.Config):
    """uvicorn's config carrying the `ServerLimits` the protocol reads and the `LogSettings`
    each process logs by (pickled along to worker processes with the rest)."""

    def __init__(self, app: Any, *, server_limits: ServerLimits,
                 log_settings: logs.LogSettings | None = None, **options: Any) -> None:
        self.log_settings = log_settings
        if log_settings is not None:
            options["log_config"] = None  # uvicorn's would give its loggers handlers of their own
        super().__init__(app, http=PROTOCOL, **options)
        self.server_limits = server_limits

    def configure_logging(self) -> None:
        """Called by uvicorn in the server's process and again in each worker process."""
        if self.log_settings is not None:
            logs.configure_logging(self.log_settings)
        super().configure_logging()  # levels, and `access_log=False` silencing uvicorn.access


WORKER_HEALTHCHECK_SECONDS = 30
"""How long uvicorn's supervisor waits for a worker process to answer its ping before it kills
and replaces it. uvicorn's default, 5 s, includes the worker's start (a spawned interpreter
importing the app): on a loaded machine or a CPU-throttled container that takes longer, and
every replacement is killed the same way, so the server never serves (seen: load 12 on 2
cores). A worker truly hung is still replaced, 30 s later."""


def run(app: Any, *, host: str, port: int, limits: ServerLimits | None = None,
        workers: int = 1, log_settings: logs.LogSettings | None = None,
        **options: Any) -> None:
    """`uvicorn.run(app, ...)` with the bounded protocol. `app` is an ASGI app, or an import
    string (needed for `workers > 1`); `log_settings` route every process's logging through
    `core.logs` (without: uvicorn's default logging); `options` are uvicorn's."""
    options.setdefault("timeout_worker_healthcheck", WORKER_HEALTHCHECK_SECONDS)
    config = ServerConfig(app, server_limits=limits or ServerLimits(), host=host, port=port,
                          workers=workers, log_settings=log_settings, **options)
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


def log_settings(settings: Settings) -> logs.LogSettings:
    """The process's `LOG_LEVEL` and `LOG_FORMAT`."""
    return logs.LogSettings(level=settings.log_level, format=settings.log_format)


def configure_logging(settings: Settings | None = None) -> None:
    """Log to stdout through `core.logs` (JSON lines, or readable ones in a terminal), each
    line with the service, trace, correlation ids and the event or request it is about."""
    logs.configure_logging(log_settings(settings or get_settings()))


def serve(factory: str, settings: Settings | None = None) -> None:
    """Serve the app `factory` ("package.module:function", no arguments) until SIGINT or
    SIGTERM, which drain it through its lifespan (deregister, consumers, relay, database)."""
    cfg = settings or get_settings()
    configure_logging(cfg)
    logs.identify(cfg.service_name)  # and the instance, once the app has its settings
    run(factory, factory=True, host=cfg.service_host, port=cfg.service_port,
        log_settings=log_settings(cfg), log_level=None, access_log=cfg.access_log,
        timeout_graceful_shutdown=20, proxy_headers=True,
        forwarded_allow_ips=cfg.forwarded_allow_ips)
