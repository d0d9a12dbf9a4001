"""What create_service does with security: refuses to build a service whose routes read a
token while nothing verifies tokens, and declares each such route's refusals in its OpenAPI."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from core.bases import ConfigurationError
from core.bases.schemas import ErrorResponse
from core.config import Settings
from core.security import CurrentPrincipal
from core.security.wiring import _document_refusals
from tests.sample_service.app import service


def test_token_routes_without_a_verifier_refuse_to_build() -> None:
    with pytest.raises(ConfigurationError, match=r"GET /whoami, GET /relay/\{service_name\} "
                                                 r"read a bearer token, but nothing verifies "
                                                 r"tokens: set JWKS_URL"):
        service(Settings(jwks_url=None), secured=True)
    service(Settings(jwks_url=None))  # no token routes: nothing to verify


def test_token_routes_declare_401_403_and_503_with_the_error_body() -> None:
    app = service(Settings(jwks_url="http://127.0.0.1:1/jwks.json"), secured=True)
    schema = app.openapi()
    whoami = schema["paths"]["/whoami"]["get"]["responses"]
    assert {"200", "401", "403", "503"} <= set(whoami)
    assert whoami["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"}
    assert "ErrorResponse" in schema["components"]["schemas"]
    assert "ErrorDetail" in schema["components"]["schemas"]
    relay = schema["paths"]["/relay/{service_name}"]["get"]["responses"]
    assert {"401", "403", "502", "503", "504"} <= set(relay)
    listing = schema["paths"]["/widgets"]["get"]["responses"]
    assert "401" not in listing, "a route without a token check declared a 401"
    assert app.openapi() is schema


def _bare_app(*, token_route: bool) -> FastAPI:
    """An app in which nothing but the refusals could declare the error body."""
    app = FastAPI()

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    if token_route:
        @app.get("/mine", responses={418: {"description": "kept as declared"}})
        async def mine(principal: CurrentPrincipal) -> dict[str, str]:
            return {"subject": principal.subject}

    _document_refusals(app)
    return app


def test_the_refusals_bring_the_error_body_and_its_parts_into_the_components() -> None:
    schema = _bare_app(token_route=True).openapi()
    components = schema["components"]["schemas"]
    expected = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    parts = expected.pop("$defs")
    assert components["ErrorResponse"] == expected
    assert parts and all(components[name] == part for name, part in parts.items())
    responses = schema["paths"]["/mine"]["get"]["responses"]
    assert responses["418"] == {"description": "kept as declared"}
    assert responses["401"]["description"] == (
        "No valid bearer token (the body says which rule failed)")
    assert responses["403"]["description"] == "The token's subject may not do this"
    assert responses["503"]["description"] == (
        "Token verification keys are unavailable; retry shortly")
    assert "401" not in schema["paths"]["/open"]["get"]["responses"]


def test_without_token_routes_the_schema_gains_nothing() -> None:
    schema = _bare_app(token_route=False).openapi()
    assert "ErrorResponse" not in schema.get("components", {}).get("schemas", {})
    assert set(schema["paths"]["/open"]["get"]["responses"]) == {"200"}
