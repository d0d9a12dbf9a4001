"""The httpx adapter of the transport seam: kept so the choice can be measured again
(`python -m bench.s2s`); the client defaults to aiohttp."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence

import httpx

from core.http.transport import ConnectFailedError, ExchangeFailedError, RawResponse


class _Response:
    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.TransportError as exc:
            raise ExchangeFailedError(f"reading the body failed: {exc!r}") from exc
        finally:
            await self._response.aclose()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise ExchangeFailedError(f"reading the body failed: {exc!r}") from exc

    async def close(self) -> None:
        await self._response.aclose()


class HttpxTransport:
    """Keep-alive connections through one `httpx.AsyncHTTPTransport` (the pool without the
    client's cookie and redirect handling)."""

    def __init__(self, pool_size: int = 256) -> None:
        limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size,
                              keepalive_expiry=4.0)  # under uvicorn's 5 s, as for aiohttp
        self._transport = httpx.AsyncHTTPTransport(limits=limits)

    async def open(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   content: bytes | AsyncIterable[bytes] | None) -> RawResponse:
        request = httpx.Request(method, url, headers=list(headers), content=content)
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.ConnectError as exc:
            raise ConnectFailedError(f"connect to {url} failed: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise ExchangeFailedError(f"{method} {url} failed: {exc!r}") from exc
        response.request = request
        return _Response(response)

    async def aclose(self) -> None:
        await self._transport.aclose()
