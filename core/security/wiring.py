"""Wiring a service's security once: `security_from_settings` builds it, `install_security`
hands it to the app (routes reach it through core.security.deps), and the app's lifespan
calls `start()`/`stop()` (the JWKS background refresh).

    security = security_from_settings(settings)          # None: this service verifies nothing
    if security:
        install_security(app, security)
        ... in the lifespan: await security.start(); ...; await security.stop()
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.bases.exceptions import ConfigurationError, error_response
from core.config import Settings
from core.security.errors import KeysUnavailable
from core.security.jwks import JwksClient, LocalKeySource
from core.security.keys import KeyManager
from core.security.types import KeySource
from core.security.verifier import TokenVerifier

RETRY_AFTER_SECONDS = 5


@dataclass(slots=True)
class Security:
    """What a service verifies tokens with; `jwks` is None when the keys are local."""

    verifier: TokenVerifier
    jwks: JwksClient | None = None

    async def start(self) -> None:
        """Fetch the JWKS and start refreshing it; an issuer that is away is logged, not fatal
        (requests get 503 until the keys come)."""
        if self.jwks is not None:
            await self.jwks.start()

    async def stop(self) -> None:
        if self.jwks is not None:
            await self.jwks.stop()


def security_from_settings(settings: Settings, *,
                           local_keys: KeyManager | None = None) -> Security | None:
    """The verifier the settings describe: from `JWKS_URL`, or from `local_keys` (the issuer
    verifying its own tokens). None when neither is given."""
    source: KeySource
    jwks = None
    if local_keys is not None:
        source = LocalKeySource(local_keys)
    elif settings.jwks_url:
        jwks = JwksClient(settings.jwks_url, refresh_interval=settings.jwks_refresh_seconds,
                          min_refresh_interval=settings.jwks_min_refresh_seconds)
        source = jwks
    else:
        return None
    if not settings.jwt_audience:
        raise ConfigurationError("JWT_AUDIENCE is required to verify tokens")
    verifier = TokenVerifier(source, issuer=settings.jwt_issuer,
                             audience=settings.jwt_audience,
                             algorithms=settings.jwt_algorithms,
                             leeway=settings.jwt_leeway_seconds)
    return Security(verifier, jwks)


def install_security(app: FastAPI, security: Security) -> None:
    """Give the app's routes their verifier, and answer KeysUnavailable as a 503 with
    Retry-After (the generic handler would hide it behind a bare 500-style body)."""
    app.state.security = security
    app.add_exception_handler(KeysUnavailable, _keys_unavailable)


async def _keys_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return error_response(KeysUnavailable.status_code, KeysUnavailable.code,
                          KeysUnavailable.default_message,
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
