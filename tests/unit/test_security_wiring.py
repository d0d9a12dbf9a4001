"""What create_service does with security: refuses to build a service whose routes read a
token while nothing verifies tokens, and declares each such route's refusals in its OpenAPI."""

from __future__ import annotations

import pytest

from core.bases import ConfigurationError
from core.config import Settings
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
