"""`python -m tests.integration.procs.docs_stack SERVICE_PORT GATEWAY_PORT`: the sample service
(built by `create_service`) and a gateway routing `/api/widgets` to it, in one process, for
the docs' browser test. The service runs without its lifespan: `/docs` and `/openapi.json`
need no database or Kafka, and the test stays cheap."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.fixed_registry import FixedRegistry
from tests.sample_service.app import service

ROUTES = """
[[routes]]
name = "widgets"
prefix = "/api/widgets"
service = "sample"
rewrite = "/widgets"
public = true
"""


async def main(service_port: int, gateway_port: int) -> None:
    routes = Path(tempfile.mkdtemp()) / "routes.toml"
    routes.write_text(ROUTES)
    gateway = create_app(
        GatewaySettings(_env_file=None, gateway_routes_file=routes, legacy_upstream_url=None,
                        jwks_url="http://127.0.0.1:9/.well-known/jwks.json",
                        # the service is never "ready" without its lifespan: one failed
                        # check keeps it in the balancing, two (an hour apart) would not
                        gateway_health_interval=3600.0),
        registry=FixedRegistry({"sample": [f"http://127.0.0.1:{service_port}"]}))
    servers = [
        uvicorn.Server(uvicorn.Config(service(), host="127.0.0.1", port=service_port,
                                      lifespan="off", log_level="warning")),
        uvicorn.Server(uvicorn.Config(gateway, host="127.0.0.1", port=gateway_port,
                                      log_level="warning"))]
    await asyncio.gather(*(server.serve() for server in servers))


if __name__ == "__main__":
    os.environ.setdefault("SERVICE_PORT", sys.argv[1])
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
