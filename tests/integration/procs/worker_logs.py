"""`python -m tests.integration.procs.worker_logs PORT`: a bare ASGI app that logs a line per
request, served by `core.serving.run` with two worker processes and JSON logs, as the gateway
runs with `GATEWAY_WORKERS=2`."""

from __future__ import annotations

import logging
import sys
from typing import Any

from core.logs import LogSettings
from core.serving import run

log = logging.getLogger("worker_app")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    log.info("serving %s", scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


if __name__ == "__main__":
    run("tests.integration.procs.worker_logs:app", host="127.0.0.1", port=int(sys.argv[1]),
        workers=2, log_level=None, access_log=True, log_settings=LogSettings(format="json"))
