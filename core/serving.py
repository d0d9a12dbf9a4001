"""Running a service's app as a process: `serve("services.user.main:create_app")`.

The app is built by its factory inside uvicorn (nothing is built at import, so tests import the
same module and build apps with their own settings). Host and port come from the settings
(`SERVICE_HOST`, `SERVICE_PORT`), which the registry also advertises, so the two cannot
disagree. The client address is the gateway's `X-Forwarded-For` when the peer is one of
`FORWARDED_ALLOW_IPS` (validated by core.config), the peer's own otherwise.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from core.config import Settings, get_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(factory: str, settings: Settings | None = None) -> None:
    """Serve the app `factory` ("package.module:function", no arguments) until SIGINT or
    SIGTERM, which drain it through its lifespan (deregister, consumers, relay, database)."""
    cfg = settings or get_settings()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format=LOG_FORMAT)
    uvicorn.run(factory, factory=True, host=cfg.service_host, port=cfg.service_port,
                log_level="info", access_log=False, timeout_graceful_shutdown=20,
                proxy_headers=True, forwarded_allow_ips=cfg.forwarded_allow_ips)
