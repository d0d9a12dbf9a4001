"""The requests `bench.memory` sends through the gateway: a burst of a fixed number, a steady
rate, and many keep-alive connections held open.

Every function counts answers by status; a status of 0 means the request failed (a socket
error, a timeout). aiohttp is the client (a few hundred µs of CPU a request, below the
gateway's and the services' own); the held connections are bare asyncio streams, so each is
exactly one socket to the gateway and nothing pools or closes them behind our back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp


async def _get(session: aiohttp.ClientSession, url: str, counts: Counter[int]) -> None:
    try:
        async with session.get(url) as response:
            await response.read()
            counts[response.status] += 1
    except (aiohttp.ClientError, TimeoutError):
        counts[0] += 1


def session(token: str, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        timeout=aiohttp.ClientTimeout(total=30))


async def burst(client: aiohttp.ClientSession, urls: Sequence[str], each: int,
                concurrency: int) -> Counter[int]:
    """`each` requests to every one of `urls`, interleaved, `concurrency` at a time."""
    counts: Counter[int] = Counter()
    queue = [url for _ in range(each) for url in urls]
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(queue):
            url = queue[position]
            position += 1
            await _get(client, url, counts)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


async def steady(client: aiohttp.ClientSession, urls: Sequence[str], rate: float,
                 seconds: float, counts: Counter[int]) -> None:
    """`rate` requests a second round-robin over `urls` for `seconds` (open loop: a slow
    answer does not slow the sending; at most 256 unanswered at once)."""
    limit = asyncio.Semaphore(256)
    tasks: set[asyncio.Task[None]] = set()

    async def one(url: str) -> None:
        async with limit:
            await _get(client, url, counts)

    started = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(urls[i % len(urls)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


class HeldConnections:
    """`count` keep-alive connections to `host:port`, each asking for `path` every
    `interval` seconds (below the server's keep-alive timeout, uvicorn's 5 s, so the server
    keeps every one open). `open_now()` counts those still open."""

    def __init__(self, host: str, port: int, path: str, count: int,
                 interval: float = 3.0) -> None:
        self.host, self.port, self.path = host, port, path
        self.count, self.interval = count, interval
        self.counts: Counter[int] = Counter()
        self.opened = 0
        self._open: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Connection: keep-alive\r\n\r\n").encode()

    @property
    def open_now(self) -> int:
        return len(self._open)

    async def start(self, ramp_seconds: float = 2.0) -> None:
        """Open them all, spread over `ramp_seconds` (not one burst of 1,000 handshakes);
        returns once each has had its first answer (or failed)."""
        first = [asyncio.get_running_loop().create_future() for _ in range(self.count)]
        for n, ready in enumerate(first):
            self._tasks.append(asyncio.create_task(self._hold(n, ready)))
            if n % 50 == 49:
                await asyncio.sleep(ramp_seconds * 50 / self.count)
        await asyncio.gather(*first)

    async def _hold(self, n: int, ready: asyncio.Future[None]) -> None:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
            self._open.add(n)
            while True:
                writer.write(self._request)
                status = await self._response(reader)
                self.counts[status] += 1
                if not ready.done():
                    ready.set_result(None)
                await asyncio.sleep(self.interval)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.counts[0] += 1
        finally:
            self._open.discard(n)
            if not ready.done():
                ready.set_result(None)
            if writer is not None:
                writer.close()

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> int:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith("content-length:")), None)
        if length is None:
            raise ValueError("an answer without content-length")
        await reader.readexactly(length)
        return status

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
