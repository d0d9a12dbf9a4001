"""The FastAPI dependencies: the current and optional principal, permissions, owner checks,
the 401/403/503 answers, and a service that forgot to install security."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from httpx import ASGITransport, AsyncClient

from core.bases import ConfigurationError, install_exception_handlers
from core.config import Settings
from core.security import (
    CurrentPrincipal,
    CurrentService,
    CurrentUser,
    JwksClient,
    KeyManager,
    MemoryKeyStore,
    OptionalPrincipal,
    Principal,
    Security,
    StaticKeySource,
    TokenVerifier,
    install_security,
    owner_or,
    path_param,
    require_permission,
    require_role,
    security_from_settings,
)
from core.security.keys import SigningKey
from tests.security_support import AUDIENCE, ISSUER, claims, sign

KEY = SigningKey.generate("EdDSA", now=time.time())
OWNERS = {"d-1": "user-1", "d-2": "user-2"}


def driver_owner(driver_id: str) -> str | None:
    return OWNERS.get(driver_id)


async def async_owner(driver_id: str) -> str | None:
    return OWNERS.get(driver_id)


def build(security: Security | None) -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)
    if security is not None:
        install_security(app, security)
    router = APIRouter()

    @router.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"sub": principal.subject}

    @router.get("/my-things")
    async def mine(user: CurrentUser) -> dict[str, Any]:
        return {"sub": user.subject}

    @router.post("/service-only")
    async def service_only(service: CurrentService) -> dict[str, Any]:
        return {"sub": service.subject}

    @router.get("/public")
    async def public(principal: OptionalPrincipal) -> dict[str, Any]:
        return {"sub": principal.subject if principal else None}

    @router.post("/drivers", dependencies=[Depends(require_permission("drivers:write"))])
    async def create() -> dict[str, Any]:
        return {"ok": True}

    @router.post("/both", dependencies=[Depends(require_permission("a", "b"))])
    async def both() -> dict[str, Any]:
        return {"ok": True}

    @router.get("/admin", dependencies=[Depends(require_role("admin"))])
    async def admin() -> dict[str, Any]:
        return {"ok": True}

    @router.patch("/drivers/{driver_id}",
                  dependencies=[Depends(owner_or("drivers:write", owner_of=driver_owner))])
    async def update(driver_id: str) -> dict[str, Any]:
        return {"ok": driver_id}

    @router.delete("/drivers/{driver_id}",
                   dependencies=[Depends(owner_or("drivers:write", owner_of=async_owner))])
    async def delete(driver_id: str) -> dict[str, Any]:
        return {"ok": driver_id}

    @router.get("/users/{id}", dependencies=[Depends(owner_or("users:read",
                                                              owner_of=path_param("id")))])
    async def user(id: str) -> dict[str, Any]:
        return {"ok": id}

    @router.get("/whoami-twice")
    async def twice(one: CurrentPrincipal,
                    two: Annotated[Principal, Depends(require_principal_copy)]) -> dict[str, Any]:
        return {"same": one is two}

    app.include_router(router)
    return app


def require_principal_copy(principal: CurrentPrincipal) -> Principal:
    return principal


class CountingSource(StaticKeySource):
    calls = 0

    async def get(self, kid: str) -> Any:
        CountingSource.calls += 1
        return await super().get(kid)


@pytest.fixture
async def http() -> AsyncIterator[AsyncClient]:
    verifier = TokenVerifier(CountingSource([KEY.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    app = build(Security(verifier))
    async with AsyncClient(transport=ASGITransport(app), base_url="http://t") as client:
        yield client


def bearer(**overrides: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {sign(KEY, claims(**overrides))}"}


async def test_no_token_is_401_missing_token(http: AsyncClient) -> None:
    response = await http.get("/me")
    assert response.status_code == 401
    assert response.json()["error"]["fields"][0]["code"] == "missing_token"
    assert "this route needs a bearer token" in response.text
    # RFC 6750 §3.1: no error code when the request sent no credentials at all.
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Basic dTpw", "Bearer", "Bearer   ", "Token abc",
                                    "bearer"])
async def test_another_scheme_or_no_token_after_bearer_is_401(http: AsyncClient,
                                                              header: str) -> None:
    for path in ("/me", "/public"):
        response = await http.get(path, headers={"authorization": header})
        assert response.status_code == 401, (path, header)
        assert response.json()["error"]["fields"][0]["code"] == "malformed"


async def test_the_scheme_is_case_insensitive_and_spaces_are_tolerated(
        http: AsyncClient) -> None:
    token = sign(KEY)
    for header in (f"Bearer {token}", f"BEARER {token}", f"  bearer   {token}  "):
        response = await http.get("/me", headers={"authorization": header})
        assert response.json() == {"sub": "user-1"}, header


async def test_a_public_route_takes_anonymous_and_known_callers_but_not_bad_tokens(
        http: AsyncClient) -> None:
    assert (await http.get("/public")).json() == {"sub": None}
    assert (await http.get("/public", headers=bearer(sub="u-9"))).json() == {"sub": "u-9"}
    bad = await http.get("/public", headers=bearer(exp=1))
    assert bad.status_code == 401
    assert bad.json()["error"]["fields"][0]["code"] == "expired"


async def test_require_permission(http: AsyncClient) -> None:
    allowed = await http.post("/drivers", headers=bearer(permissions=["drivers:write"]))
    assert allowed.status_code == 200
    refused = await http.post("/drivers", headers=bearer(permissions=["drivers:read"]))
    assert refused.status_code == 403
    assert refused.json()["error"] == {"code": "forbidden",
                                       "message": "missing permission drivers:write",
                                       "fields": []}
    assert (await http.post("/drivers")).status_code == 401


async def test_require_permission_needs_every_one(http: AsyncClient) -> None:
    assert (await http.post("/both", headers=bearer(permissions=["a", "b"]))).status_code == 200
    refused = await http.post("/both", headers=bearer(permissions=["b"]))
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "missing permission a"


def test_require_permission_needs_a_permission() -> None:
    with pytest.raises(ConfigurationError):
        require_permission()


async def test_require_role(http: AsyncClient) -> None:
    assert (await http.get("/admin", headers=bearer(roles=["admin"]))).status_code == 200
    refused = await http.get("/admin", headers=bearer(roles=["driver"]))
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "requires role admin"


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_owner_or_permission(http: AsyncClient, method: str) -> None:
    async def call(driver: str, **overrides: Any) -> int:
        response = await http.request(method, f"/drivers/{driver}", headers=bearer(**overrides))
        return response.status_code

    assert await call("d-1", sub="user-1", permissions=[]) == 200
    assert await call("d-2", sub="user-1", permissions=[]) == 403
    assert await call("d-2", sub="user-1", permissions=["drivers:write"]) == 200
    assert await call("d-404", sub="user-1", permissions=[]) == 403
    assert await call("d-404", sub="user-1", permissions=["drivers:write"]) == 200
    refused = await http.request(method, "/drivers/d-2", headers=bearer(permissions=[]))
    assert refused.json()["error"]["message"] == (
        "only the owner or a holder of drivers:write may do this")
    assert (await http.request(method, "/drivers/d-1")).status_code == 401


async def test_owner_by_path_param(http: AsyncClient) -> None:
    assert (await http.get("/users/user-1", headers=bearer(permissions=[]))).status_code == 200
    assert (await http.get("/users/user-2", headers=bearer(permissions=[]))).status_code == 403
    assert (await http.get("/users/user-2",
                           headers=bearer(permissions=["users:read"]))).status_code == 200


async def test_a_service_token_named_as_a_user_owns_nothing(http: AsyncClient) -> None:
    """A service client's subject is its name: equal to a user's id, it is still not them."""
    service = {"sub": "user-1", "kind": "service", "permissions": []}
    assert (await http.get("/users/user-1", headers=bearer(**service))).status_code == 403
    assert (await http.patch("/drivers/d-1", headers=bearer(**service))).status_code == 403
    assert (await http.get("/users/user-1", headers=bearer(
        **{**service, "permissions": ["users:read"]}))).status_code == 200, "a grant still is"


async def test_routes_that_act_as_the_caller_take_users_only(http: AsyncClient) -> None:
    user = await http.get("/my-things", headers=bearer(sub="user-1"))
    assert (user.status_code, user.json()) == (200, {"sub": "user-1"})
    service = await http.get("/my-things", headers=bearer(sub="user-1", kind="service"))
    assert service.status_code == 403
    assert service.json()["error"]["message"] == (
        "this route acts as a user; a service token has no user")
    assert (await http.get("/my-things")).status_code == 401


async def test_service_routes_take_service_tokens_only(http: AsyncClient) -> None:
    assert (await http.post("/service-only", headers=bearer(
        sub="billing", kind="service"))).status_code == 200
    refused = await http.post("/service-only", headers=bearer(sub="user-1"))
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "this route is for service clients only"


def test_path_param_without_the_parameter_is_no_owner() -> None:
    class Request:
        path_params: dict[str, Any] = {"id": 7}

    assert path_param("id")(Request()) == "7"  # type: ignore[arg-type]
    assert path_param("other")(Request()) is None  # type: ignore[arg-type]


async def test_the_token_is_verified_once_per_request(http: AsyncClient) -> None:
    CountingSource.calls = 0
    response = await http.get("/whoami-twice", headers=bearer())
    assert response.json() == {"same": True}
    assert CountingSource.calls == 1


async def test_an_app_without_security_is_a_configuration_error() -> None:
    app = build(None)
    async with AsyncClient(transport=ASGITransport(app), base_url="http://t") as client:
        response = await client.get("/me", headers=bearer())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"


async def test_keys_unavailable_is_503_with_retry_after() -> None:
    def away(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    jwks = JwksClient("http://issuer/jwks",
                      http=httpx.AsyncClient(transport=httpx.MockTransport(away)))
    app = build(Security(TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE), jwks))
    async with AsyncClient(transport=ASGITransport(app), base_url="http://t") as client:
        response = await client.get("/me", headers=bearer())
        anonymous = await client.get("/public")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "keys_unavailable"
    assert anonymous.json() == {"sub": None}, "no token, no keys needed"


# --- wiring from settings ---------------------------------------------------------------------


def test_no_jwks_url_and_no_local_keys_is_no_security() -> None:
    assert security_from_settings(Settings()) is None


async def test_settings_with_a_jwks_url_build_a_jwks_verifier() -> None:
    settings = Settings(jwks_url="http://auth/jwks", jwt_issuer="i", jwt_audience="a",
                        jwt_algorithms=["ES256"], jwt_leeway_seconds=3,
                        jwks_refresh_seconds=60, jwks_min_refresh_seconds=2)
    security = security_from_settings(settings)
    assert security is not None and security.jwks is not None
    assert security.verifier.keys is security.jwks
    assert (security.jwks.url, security.jwks.refresh_interval,
            security.jwks.min_refresh_interval) == ("http://auth/jwks", 60, 2)
    verifier = security.verifier
    assert (verifier.issuer, verifier.audiences, verifier.algorithms, verifier.leeway) == (
        "i", {"a"}, {"ES256"}, 3)
    await security.stop()


async def test_local_keys_win_over_a_jwks_url() -> None:
    manager = await KeyManager.open(MemoryKeyStore())
    security = security_from_settings(Settings(jwks_url="http://x"), local_keys=manager)
    assert security is not None and security.jwks is None
    await security.start()
    await security.stop()


def test_an_empty_audience_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="JWT_AUDIENCE"):
        security_from_settings(Settings(jwks_url="http://x", jwt_audience=""))


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_ALGORITHMS", '["EdDSA"]')
    monkeypatch.setenv("SERVICE_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("JWKS_URL", "http://auth/jwks")
    settings = Settings()
    assert settings.jwt_algorithms == ["EdDSA"]
    assert settings.service_client_secret is not None
    assert "s3cret" not in repr(settings)
    assert settings.jwks_url == "http://auth/jwks"
    assert (settings.jwt_issuer, settings.jwt_audience, settings.jwt_leeway_seconds) == (
        "auth", "platform", 30.0)
    assert (settings.jwks_refresh_seconds, settings.jwks_min_refresh_seconds) == (300.0, 5.0)


def test_get_verifier_without_security_says_what_to_call() -> None:
    from types import SimpleNamespace

    from core.security.deps import get_verifier

    for state in (SimpleNamespace(), SimpleNamespace(security=SimpleNamespace(verifier=1))):
        request: Any = SimpleNamespace(app=SimpleNamespace(state=state))
        with pytest.raises(ConfigurationError, match=(
                r"^no verifier: call core\.security\.install_security\(app, \.\.\.\)$")):
            get_verifier(request)


async def test_bearer_refusals_say_what_is_expected(http: AsyncClient) -> None:
    response = await http.get("/me", headers={"authorization": "Basic dTpw"})
    assert response.json()["error"]["message"] == (
        "malformed: expected Authorization: Bearer <token>")


async def test_the_openapi_names_the_bearer_scheme(http: AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "An access token from the auth service"}


async def test_keys_unavailable_says_retry_shortly() -> None:
    from core.security import KeysUnavailableError
    from core.security.wiring import RETRY_AFTER_SECONDS

    assert (KeysUnavailableError.status_code,
            KeysUnavailableError.code) == (503, "keys_unavailable")
    assert KeysUnavailableError().message == (
        "Token verification keys are unavailable; retry shortly")
    assert RETRY_AFTER_SECONDS == 5
    app = FastAPI()
    install_exception_handlers(app)
    jwks = JwksClient("http://127.0.0.1:9/jwks", http=httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(500))))
    install_security(app, Security(TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)))

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> None: ...

    async with AsyncClient(transport=ASGITransport(app), base_url="http://t") as client:
        body = (await client.get("/me", headers=bearer())).json()
    assert body["error"]["message"] == "Token verification keys are unavailable; retry shortly"
    assert app.state.security.jwks is None


async def test_security_start_and_stop_drive_the_jwks_client() -> None:
    k = SigningKey.generate("EdDSA", now=time.time())
    served = {"n": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        served["n"] += 1
        return httpx.Response(200, json={"keys": [k.public_jwk]})

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    jwks = JwksClient("http://issuer/jwks", http=http, refresh_interval=60)
    security = Security(TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE), jwks)
    await security.start()
    assert served["n"] == 1 and k.kid in jwks.keys
    assert jwks._loop is not None
    await security.stop()
    assert jwks._loop is None


def test_settings_without_a_jwks_url_but_local_keys_need_an_audience() -> None:
    from core.security import KeyManager as Manager

    manager = Manager(MemoryKeyStore())
    with pytest.raises(ConfigurationError, match=r"^JWT_AUDIENCE is required to verify tokens$"):
        security_from_settings(Settings(jwt_audience=""), local_keys=manager)
    built = security_from_settings(Settings(jwt_issuer="me"), local_keys=manager)
    assert built is not None and built.verifier.issuer == "me"


def test_require_permission_without_one_says_so() -> None:
    with pytest.raises(ConfigurationError,
                       match=r"^require_permission needs at least one permission$"):
        require_permission()


async def test_every_missing_permission_is_named(http: AsyncClient) -> None:
    refused = await http.post("/both", headers=bearer(permissions=[]))
    assert refused.json()["error"]["message"] == "missing permission a, b"


async def test_local_keys_verify_the_issuers_tokens() -> None:
    from core.security import KeyManager as Manager
    from core.security import TokenIssuer

    manager = await Manager.open(MemoryKeyStore())
    security = security_from_settings(Settings(jwt_issuer=ISSUER, jwt_audience=AUDIENCE),
                                      local_keys=manager)
    assert security is not None
    token = TokenIssuer(manager, ISSUER).issue("me", AUDIENCE, 60)
    assert (await security.verifier.verify(token)).subject == "me"
