"""Real HTTP/1.1 servers answering `/health/ready`, for the gateway's upstream health checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Readiness:
    """A real HTTP/1.1 server answering `/health/ready` after `delay` s, 200 or 503."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.ready = True
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Readiness:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(self.delay)
            status = b"200 OK" if self.ready else b"503 Service Unavailable"
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n"
                         b"connection: close\r\n\r\n{}")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def servers(count: int, delay: float = 0.0) -> AsyncIterator[list[Readiness]]:
    started = [await Readiness(delay).start() for _ in range(count)]
    try:
        yield started
    finally:
        for server in started:
            await server.stop()
