"""`python -m tests.integration.procs.secured_app PORT`: the sample service with its routes
that need a verified token (JWKS_URL, JWT_ISSUER, JWT_AUDIENCE from the environment) and call
other services by name (REGISTRY_* from the environment)."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from tests.sample_service.app import service

if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
    os.environ.setdefault("SERVICE_PORT", sys.argv[1])
    uvicorn.run(service(secured=True), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="info")
