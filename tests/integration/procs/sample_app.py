"""`python -m tests.integration.procs.sample_app PORT`: the sample service built by
`create_service`, served by uvicorn; configured by the environment like a real service."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from tests.sample_service.app import service

if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
    os.environ.setdefault("SERVICE_PORT", sys.argv[1])  # the URL it registers under
    uvicorn.run(service(), host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
