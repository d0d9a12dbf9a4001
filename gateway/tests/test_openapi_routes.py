"""The merged document of the reference services through the gateway's shipped route table
(gateway/routes.toml, loaded by gateway.routes): what `make up` serves at /docs."""

from __future__ import annotations

from collections import Counter

import pytest
from schemathesis.openapi import from_dict

from gateway.config import DEFAULT_ROUTES_FILE, GatewaySettings
from gateway.openapi import merge_openapi
from gateway.routes import load_route_table
from gateway.tests.openapi_support import Json, dangling_refs, operations, reference_specs

SHIPPED = load_route_table(DEFAULT_ROUTES_FILE, GatewaySettings(
    _env_file=None, legacy_upstream_url=None, gateway_default_rate_limit="600/60"))


@pytest.fixture(scope="module")
def real_specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Json]:
    return reference_specs(tmp_path_factory.mktemp("openapi-routes"))


def test_the_shipped_table_documents_every_service_operation_once(
        real_specs: dict[str, Json]) -> None:
    doc = merge_openapi(SHIPPED, real_specs, title="Platform API", version="1")
    expected = Counter((spath, method) for s in real_specs.values()
                       for spath, method, _ in operations(s) if not spath.startswith("/health/"))
    routed = [(path, method, o) for path, method, o in operations(doc)
              if not path.startswith("/health/")]
    assert len(routed) == sum(expected.values())
    # each one really reaches its service path through the route the gateway picks
    for path, _, o in routed:
        route = SHIPPED.match(path)
        assert route is not None and o["tags"][0] == route.service
        assert route.upstream_path(path) in {p for p, _ in expected}
    paths = doc["paths"]
    assert set(paths["/api/auth/login"]) == {"post"}
    assert paths["/api/auth/login"]["post"]["security"] == []
    assert paths["/api/users/me"]["get"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/auth/roles"]["post"]["x-required-permissions"] == ["rbac:manage"]
    assert paths["/api/notifications"]["get"]["x-required-permissions"] == [
        "notifications:read"]
    assert paths["/api/drivers/nearby"]["get"]["x-required-permissions"] == ["drivers:read"]
    assert "x-required-permissions" not in paths["/api/drivers/{driver_id}/status"]["put"]
    assert dangling_refs(doc) == []
    from_dict(doc).validate()
