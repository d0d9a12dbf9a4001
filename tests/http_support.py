"""Helpers for the service-client tests: upstream processes, a raw server."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from devinfra.process import free_port
from tests.fixed_registry import FixedRegistry
from tests.helpers import eventually

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


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP stand-in for an upstream that misbehaves in one precise way: `handle` runs once
    per connection and writes what bytes it likes. `made` counts the connections accepted,
    `open` those whose handler has not ended (a handler that reads until EOF ends when the
    client closes)."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.made = 0
        self.open = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:  # handlers still reading end at once (EOF)
            writer.transport.abort()
        await eventually(lambda: self.open == 0, timeout=10, interval=0.01)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.made += 1
        self.open += 1
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      answer: bytes) -> None:
    """Answer every request head (requests without a body) with `answer`, until EOF."""
    while True:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        writer.write(answer)
        await writer.drain()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST), not a clean end (FIN)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


__all__ = ["FixedRegistry", "Proc", "RawServer", "answer_each", "garbage_server", "launch",
           "reset", "start"]
