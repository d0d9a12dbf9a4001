"""The aiohttp adapter of the transport seam (the default: see README, "Calling another
service", for the measurement)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence

import aiohttp

from core.http.transport import ConnectFailedError, ExchangeFailedError, RawResponse

KEEPALIVE = 4.0
"""Seconds an idle pooled connection is kept."""
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None)


class _Response:
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]:
        return self._response.raw_headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except aiohttp.ClientError as exc:
            raise ExchangeFailedError(f"reading the body failed: {exc!r}") from exc
        finally:
            self._response.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise ExchangeFailedError(f"reading the body failed: {exc!r}") from exc

    async def close(self) -> None:
        self._response.release()


class AiohttpTransport:
    """Keep-alive connections through one `aiohttp.ClientSession`, made on first use (it
    must be made inside the running event loop)."""

    def __init__(self, pool_size: int = 256, *, proxy: bool = False) -> None:
        """`proxy`: pass bodies and headers through as they are (the gateway): no
        decompressing (the client gets the upstream's Content-Encoding and bytes as sent) and
        none of aiohttp's own Accept, Accept-Encoding and User-Agent headers added."""
        self._pool_size = pool_size
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        # Idle connections are dropped before uvicorn's 5 s keep-alive would drop them: a
        # request sent on a connection the server is closing fails, even a POST we may not
        # retry (aiohttp's own default keeps them 15 s).
        connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0,
                                         keepalive_timeout=KEEPALIVE)
        skipped = ("Accept", "Accept-Encoding", "User-Agent") if self._proxy else ()
        return aiohttp.ClientSession(connector=connector, timeout=_NO_TIMEOUT,
                                     cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=not self._proxy,
                                     skip_auto_headers=skipped)

    async def open(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   content: bytes | AsyncIterable[bytes] | None) -> RawResponse:
        session = self._session
        if session is None:
            session = self._session = self._open_session()
        try:
            response = await session.request(method, url, headers=headers, data=content,
                                             allow_redirects=False)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailedError(f"connect to {url} failed: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise ExchangeFailedError(f"{method} {url} failed: {exc!r}") from exc
        return _Response(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
