"""An upstream's answer as the service client hands it over: status, headers, body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, cast

from core.http.errors import UpstreamBadResponseError, UpstreamRejectedError
from core.http.transport import ExchangeFailedError, RawResponse


class Response:
    """A buffered answer (`content`, `text`, `json()`) or, from `ServiceClient.stream`, one
    whose body is read by `aiter_bytes()` or `aread()`. A body that breaks off while being
    read raises `UpstreamBadResponseError`; so does `json()` on a body that is not JSON."""

    __slots__ = ("_content", "_on_close", "_raw", "service")

    def __init__(self, service: str, raw: RawResponse, content: bytes | None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.service = service
        self._raw = raw
        self._content = content
        self._on_close = on_close

    @property
    def status_code(self) -> int:
        return self._raw.status

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        return self._raw.headers

    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]:
        """The headers as they came, bytes (a proxy passes them on without a round trip
        through `str`); from a transport that keeps none, encoded from `headers`."""
        raw = getattr(self._raw, "raw_headers", None)
        if raw is None:
            return [(name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in self.headers.items()]
        return cast(Sequence[tuple[bytes, bytes]], raw)

    @property
    def buffered(self) -> bytes | None:
        """The whole body when it was read within the call, else None (read it as a stream)."""
        return self._content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the body of a streamed response is read with aread()")
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except ValueError as exc:
            raise UpstreamBadResponseError(self.service, f"body is not JSON: {exc}",
                                           status=self.status_code) from exc

    def raise_for_status(self) -> Response:
        """Raise `UpstreamRejectedError` for a 4xx (5xx never get this far); return self."""
        if self.status_code >= 400:
            raise UpstreamRejectedError(self.service, self)
        return self

    async def aread(self) -> bytes:
        if self._content is None:
            try:
                self._content = await self._raw.read()
            except ExchangeFailedError as exc:
                raise UpstreamBadResponseError(self.service, str(exc),
                                               status=self.status_code) from exc
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._content is not None:
            yield self._content
            return
        try:
            async for chunk in self._raw.iter_chunks():
                yield chunk
        except ExchangeFailedError as exc:
            raise UpstreamBadResponseError(self.service, str(exc),
                                           status=self.status_code) from exc

    def release_slot(self) -> None:
        """Give back the call's bulkhead slot (and its count in balancing) now, while the
        body is still being read: for a long-lived stream whose caller bounds streams by
        other means (the gateway's stream caps), so that streams do not hold the slots short
        calls share. The connection stays until `aclose()`."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def aclose(self) -> None:
        """Give the connection back; for a streamed response, also the call's slot."""
        on_close, self._on_close = self._on_close, None
        try:
            await self._raw.close()
        finally:
            if on_close is not None:
                on_close()
