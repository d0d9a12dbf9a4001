"""Helpers for the service-client tests: upstream processes, a raw server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from devinfra.process import free_port
from tests.fixed_registry import FixedRegistry
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Proc:
    url: str
    popen: subprocess.Popen[bytes]

    def stop(self) -> None:
        """SIGKILL: a test upstream may hold requests it was told to sit on, and uvicorn's
        clean shutdown would wait for them."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def launch(module: str, *args: str, env: Mapping[str, str] | None = None) -> Proc:
    port = free_port()
    popen = subprocess.Popen(
        [sys.executable, "-m", module, str(port), *args], cwd=ROOT,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return Proc(f"http://127.0.0.1:{port}", popen)


async def start(module: str, *args: str, env: Mapping[str, str] | None = None,
                ready: str = "/_count") -> Proc:
    """`python -m module PORT *args` on a free port; returns once `ready` answers."""
    proc = launch(module, *args, env=env)
    popen = proc.popen

    async def answers() -> bool:
        assert popen.poll() is None, f"{module} exited with {popen.returncode}"
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(proc.url + ready)).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await eventually(answers, timeout=30, interval=0.1)
    except BaseException:
        proc.stop()
        raise
    return proc


async def garbage_server(reply: bytes = b"this is not HTTP at all\r\n\r\n"
                         ) -> tuple[asyncio.Server, str]:
    """A TCP server that answers every request with `reply` (by default bytes that are not
    HTTP) and closes the connection."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


__all__ = ["FixedRegistry", "Proc", "garbage_server", "launch", "start"]
