"""`python -m gateway`: serve the gateway on SERVICE_HOST:SERVICE_PORT with GATEWAY_WORKERS
processes (uvicorn with uvloop and httptools: see bench/gateway.py for the measurement)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from core.serving import LOG_FORMAT
from gateway.config import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format=LOG_FORMAT)
    uvicorn.run("gateway.main:create_app", factory=True, host=settings.service_host,
                port=settings.service_port, workers=settings.gateway_workers, loop="uvloop",
                http="httptools", log_level="info", access_log=False,
                timeout_graceful_shutdown=20, proxy_headers=False)


if __name__ == "__main__":
    main()
