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
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from core.bases.errors import ConfigurationError, error_response
from core.bases.schemas import ErrorResponse
from core.config import Settings
from core.security.errors import KeysUnavailableError
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
    """Give the app's routes their verifier, answer KeysUnavailableError as a 503 with
    Retry-After (the generic handler would hide it behind a bare 500-style body), and declare
    in the OpenAPI the 401, 403 and 503 every route that reads a token may answer."""
    app.state.security = security
    app.add_exception_handler(KeysUnavailableError, _keys_unavailable)
    _document_refusals(app)


def needs_verifier(app: FastAPI) -> list[str]:
    """The operations (as `METHOD path`) that read a bearer token, as the OpenAPI declares
    them: a service with any of them and no verifier is wired wrongly, and should not start
    (rather than answer 500s)."""
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    return [f"{method.upper()} {path}" for path, operations in schema.get("paths", {}).items()
            for method, operation in operations.items() if _reads_token(operation)]


def _reads_token(operation: Any) -> bool:
    return isinstance(operation, dict) and any(
        "HTTPBearer" in requirement for requirement in operation.get("security", ()))


_REF = "#/components/schemas/{model}"
_REFUSALS = {
    "401": "No valid bearer token (the body says which rule failed)",
    "403": "The token's subject may not do this",
    "503": "Token verification keys are unavailable; retry shortly",
}


def _document_refusals(app: FastAPI) -> None:
    """Add the refusals to each operation that declares the bearer scheme, once, when the
    schema is first built (so routes included later are covered too)."""

    built = app.openapi  # FastAPI's own: builds the schema once and keeps it

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = built()
        if fresh:
            operations = [op for path in schema.get("paths", {}).values() for op in path.values()]
            if [op for op in operations if _with_refusals(op)]:
                error = ErrorResponse.model_json_schema(ref_template=_REF)
                schemas = schema.setdefault("components", {}).setdefault("schemas", {})
                for name, sub in error.pop("$defs", {}).items():
                    schemas.setdefault(name, sub)
                schemas.setdefault("ErrorResponse", error)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _with_refusals(operation: Any) -> bool:
    if not _reads_token(operation):
        return False
    responses = operation.setdefault("responses", {})
    for status, description in _REFUSALS.items():
        responses.setdefault(status, {"description": description, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}})
    return True


async def _keys_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return error_response(KeysUnavailableError.status_code, KeysUnavailableError.code,
                          KeysUnavailableError.default_message,
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
