"""Key sources for a verifier: the issuer's JWKS over HTTP, the issuer's own keys, a fixed set.

`JwksClient` answers known kids from memory. It fetches on first use, refreshes every
`refresh_interval` in the background once started, and refreshes early for an unknown kid, at
most once per `min_refresh_interval`: a flood of made-up kids costs the issuer one request,
and concurrent misses wait on the same fetch. A failed fetch keeps the last good keys (and is
logged); only a client that never had keys raises KeysUnavailableError (503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
from jwt import PyJWK, PyJWTError

from core.security.errors import KeysUnavailableError, SecurityError
from core.security.keys import KeyManager
from core.security.types import VerificationKey
from core.tasks import cancel_and_wait, periodically

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 256 * 1024


class JwksError(SecurityError):
    """A JWKS document could not be fetched or read."""


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """The usable public signing keys of a JWKS document by kid. Keys without a kid, for
    encryption, symmetric, or that PyJWT cannot load are skipped (logged): one odd key must not
    hide the others."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwksError('a JWKS is a JSON object with a "keys" list')
    keys: dict[str, VerificationKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
            log.info("JWKS key skipped: no kid or not for signatures")
            continue
        if entry.get("kty") == "oct":
            log.warning("JWKS key %s skipped: a secret key has no place in a JWKS", kid)
            continue
        try:
            jwk = PyJWK(dict(entry))
        except PyJWTError as e:
            log.warning("JWKS key %s skipped: %s", kid, e)
            continue
        keys[kid] = VerificationKey(kid, jwk.algorithm_name, jwk)
    return keys


class StaticKeySource:
    """A fixed set of keys: for tests and benchmarks."""

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self.keys = {key.kid: key for key in keys}

    async def get(self, kid: str) -> VerificationKey | None:
        return self.keys.get(kid)


class LocalKeySource:
    """The issuer verifying its own tokens: straight from its KeyManager, no HTTP."""

    def __init__(self, manager: KeyManager) -> None:
        self.manager = manager

    async def get(self, kid: str) -> VerificationKey | None:
        return self.manager.get(kid)


class JwksClient:
    """The issuer's public keys, fetched from `url` and cached. See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient | None = None,
        refresh_interval: float = 300.0,
        min_refresh_interval: float = 5.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_interval <= 0 or min_refresh_interval < 0 or timeout <= 0:
            raise SecurityError("JWKS intervals and timeout must be positive")
        self.url = url
        self.refresh_interval = refresh_interval
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self.clock = clock
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._keys: dict[str, VerificationKey] | None = None
        self._last_attempt: float | None = None
        self._fetching: asyncio.Future[None] | None = None
        self._loop: asyncio.Task[None] | None = None
        self.fetches = 0
        """Fetch attempts so far (successful or not): for metrics and tests."""
        self.on_fetch: Callable[[bool], None] | None = None
        """Told after each fetch whether it succeeded (metrics)."""

    @property
    def keys(self) -> Mapping[str, VerificationKey]:
        return self._keys or {}

    async def get(self, kid: str) -> VerificationKey | None:
        keys = self._keys
        if keys is not None and kid in keys:
            return keys[kid]
        await self._refresh_if_allowed()
        if self._keys is None:
            raise KeysUnavailableError()
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch now (or join the fetch under way); failures are logged, keys kept."""
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        fetching = self._fetching
        # Shielded: one caller cancelled (its request gave up) must not cancel the others'.
        await asyncio.shield(fetching)

    async def _refresh_if_allowed(self) -> None:
        if self._fetching is None and self._last_attempt is not None and (
                self.clock() - self._last_attempt < self.min_refresh_interval):
            return
        await self.refresh()

    async def _fetch(self) -> None:
        self._last_attempt = self.clock()
        self.fetches += 1
        ok = False
        try:
            self._keys = await self._download()
            ok = True
            log.debug("JWKS from %s: %d keys", self.url, len(self._keys))
        except Exception as e:  # whatever the issuer sends, the verifier keeps working
            state = "keeping the last good keys" if self._keys is not None else "no keys yet"
            log.warning("JWKS fetch from %s failed (%s): %s", self.url, state, e)
        finally:
            if self.on_fetch is not None:
                self.on_fetch(ok)
            self._fetching = None

    async def _download(self) -> dict[str, VerificationKey]:
        response = await self._http.get(self.url, timeout=self.timeout,
                                        headers={"accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise JwksError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(response.json())

    async def start(self) -> None:
        """Fetch once (a failure is logged, not raised) and refresh every `refresh_interval`."""
        if self._loop is None:
            await self.refresh()
            self._loop = asyncio.create_task(
                periodically(self.refresh, self.refresh_interval, first="after_interval",
                             report="streak", log=log, failed="JWKS refresh failed",
                             resumed="JWKS refreshing again"),
                name="jwks-refresh")

    async def stop(self) -> None:
        """Stop refreshing and close the HTTP client it made; cached keys stay usable."""
        loop, self._loop = self._loop, None
        await cancel_and_wait(loop)
        if self._own_http:
            await self._http.aclose()
