"""A server of two uvicorn workers (`core.serving.run(workers=2)`) answers `/metrics` with
both workers' counts summed, whichever worker answers the scrape."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from devinfra.process import free_port
from tests.helpers.metrics import value

ROOT = Path(__file__).resolve().parents[2]

APP = '''
import os
from fastapi import FastAPI
from core.metrics import Exposition, HttpMetrics

def create():
    app = FastAPI()
    app.include_router(Exposition().router())

    @app.get("/pid/{n}")
    async def pid(n: int) -> int:
        return os.getpid()

    return HttpMetrics(app)
'''


@pytest.mark.timeout(180)
def test_two_workers_metrics_sum_both(tmp_path: Path) -> None:
    (tmp_path / "two_workers.py").write_text(APP)
    port = free_port()
    script = textwrap.dedent(f"""
        from core.serving import run
        run("two_workers:create", factory=True, host="127.0.0.1", port={port}, workers=2,
            log_level="warning")
    """)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin",
                 "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")})
    try:
        base = f"http://127.0.0.1:{port}"
        pids: set[int] = set()
        sent = 0
        deadline = time.monotonic() + 120
        while len(pids) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
            try:
                # A fresh connection each time, so the kernel may hand it to either worker.
                pids.add(httpx.get(f"{base}/pid/{sent}", timeout=2).json())
                sent += 1
            except httpx.TransportError:
                time.sleep(0.2)
        for _ in range(4):  # whichever worker answers, it reports every worker's count
            text = httpx.get(f"{base}/metrics", timeout=5).text
            assert value(text, "kfm_http_requests_total", route="/pid/{n}",
                         status="200") == sent, text
    finally:
        proc.terminate()
        proc.wait(30)
