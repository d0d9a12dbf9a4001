"""`python -m bench.observability.edge off|on`: the gateway as `python -m gateway` serves it
(same settings, server, workers and limits), observability off or on.

- off: `create_app()` with its `EdgeMiddleware` (ids, log binding, metrics) replaced by
  the ids and log binding alone (tracing not configured, so no `ServerSpans` either): the
  gateway with nothing observed.
- on: `EdgeMiddleware` + `ServerSpans` as `create_app()` builds them with tracing configured;
  the provider is `bench.observability.modes.bench_provider()` (a batch processor over an
  exporter that drops the spans), put in force before `create_app()` so its
  `setup_tracing` finds it, as it finds the one a first call built.
Each worker calls the factory, so each builds its own provider, as gateway workers do.
"""

from __future__ import annotations

import sys

from opentelemetry import trace
from starlette.types import ASGIApp

from core.http import RequestContextMiddleware
from core.logs import RequestLogMiddleware
from core.serving import ServerLimits, configure_logging, log_settings, run
from core.tracing import provider as tracing
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.middleware import EdgeMiddleware


def observed_off() -> ASGIApp:
    app = create_app()
    assert isinstance(app, EdgeMiddleware), "create_app's outermost layer is no longer the edge's"
    # Its ids and log binding without its metrics: the two middlewares a service has for them.
    return RequestContextMiddleware(RequestLogMiddleware(app.app))


def observed_on() -> ASGIApp:
    from bench.observability.modes import bench_provider

    built = bench_provider()
    trace.set_tracer_provider(built)
    tracing.install(built)
    return create_app()


def main(which: str) -> None:
    settings = GatewaySettings()
    configure_logging(settings)
    limits = ServerLimits(max_head_bytes=settings.gateway_max_head_bytes,
                          head_timeout=settings.gateway_head_timeout)
    run(f"bench.observability.edge:observed_{which}", factory=True,
        host=settings.service_host, port=settings.service_port,
        workers=settings.gateway_workers, limits=limits, loop="uvloop",
        log_settings=log_settings(settings), log_level=None, access_log=settings.access_log,
        timeout_graceful_shutdown=20, proxy_headers=False)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("off", "on"):
        raise SystemExit("usage: python -m bench.observability.edge off|on")
    main(sys.argv[1])
