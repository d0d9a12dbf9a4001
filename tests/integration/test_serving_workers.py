"""`core.serving.run` with worker processes, as the gateway runs (`GATEWAY_WORKERS`), when a
worker is slow to start: it must come up, not be killed and replaced forever (uvicorn's
supervisor kills a worker that does not answer its ping within its health-check timeout, and
a worker's start counts: on a loaded machine importing the app took longer than uvicorn's
default 5 s, and the gateway never served)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from devinfra.process import free_port

ROOT = Path(__file__).resolve().parents[2]
SLOW_START_SECONDS = 7
"""Each worker's extra start time: past uvicorn's default 5 s, well inside our 30 s."""

APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
'''

SLOW_WORKERS = f'''
import sys, time
if "--multiprocessing-fork" in sys.argv:  # a spawned worker, not the supervisor
    time.sleep({SLOW_START_SECONDS})
'''


@pytest.mark.timeout(120)
def test_workers_slower_to_start_than_uvicorns_default_still_serve(tmp_path: Path) -> None:
    (tmp_path / "slow_app.py").write_text(APP)
    (tmp_path / "sitecustomize.py").write_text(SLOW_WORKERS)
    port = free_port()
    script = textwrap.dedent(f"""
        from core.serving import run
        run("slow_app:app", host="127.0.0.1", port={port}, workers=2, log_level="info")
    """)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 4 * SLOW_START_SECONDS + 30
        answered = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answered = httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert answered == 200, f"no worker ever served:\n{log.read_text()[-3000:]}"
        assert "died" not in log.read_text(), log.read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(30)
