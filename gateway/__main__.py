"""`python -m gateway`: serve the gateway on SERVICE_HOST:SERVICE_PORT with GATEWAY_WORKERS
processes (uvicorn with uvloop and httptools: see bench/gateway.py for the measurement; heads
bounded and closes lingering by `core.server_protocol`)."""

from __future__ import annotations

import logging

from core import logs
from core.serving import ServerLimits, configure_logging, log_settings, run
from gateway.config import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings)
    logs.identify(settings.service_name)  # and the instance, once the app has its settings
    if settings.gateway_workers > 1 and not settings.redis_url:
        logging.getLogger("gateway").warning(
            "%d workers and no REDIS_URL: each worker limits rates on its own, so a client "
            "gets up to %d times its limit", settings.gateway_workers, settings.gateway_workers)
    limits = ServerLimits(max_head_bytes=settings.gateway_max_head_bytes,
                          head_timeout=settings.gateway_head_timeout)
    run("gateway.app:create_app", factory=True, host=settings.service_host,
        port=settings.service_port, workers=settings.gateway_workers, limits=limits,
        loop="uvloop", log_settings=log_settings(settings), log_level=None,
        access_log=settings.access_log, timeout_graceful_shutdown=20, proxy_headers=False)


if __name__ == "__main__":
    main()
