"""The route table: matching, rewriting, and the shipped gateway/routes.toml (validation
errors: test_routes_validation.py; reloading: test_routes_watcher.py)."""

from __future__ import annotations

import pytest

from gateway.config import DEFAULT_ROUTES_FILE, GatewaySettings
from gateway.routes import LEGACY, Route, RouteTable, load_route_table


def route(prefix: str, name: str = "", rewrite: str = "", service: str = "svc") -> Route:
    return Route(name=name or prefix.strip("/").replace("/", "-") or "root", prefix=prefix,
                 service=service, rewrite=rewrite)


TABLE = RouteTable([route("/api/users", "users"), route("/api/users/me", "me"),
                    route("/api/auth", "auth"), route("/api/auth/login/x/y", "deep")])


@pytest.mark.parametrize(("path", "expected"), [
    ("/api/users", "users"),
    ("/api/users/", "users"),
    ("/api/users/42", "users"),
    ("/api/users/42/", "users"),
    ("/api/users/me", "me"),                # the longer prefix wins
    ("/api/users/me/", "me"),
    ("/api/users/me/avatar", "me"),
    ("/api/users/meat", "users"),           # not "me": segments are whole
    ("/api/usersx", None),                  # not "users"
    ("/api/usersx/me", None),
    ("/api", None),                         # above every prefix
    ("/api/", None),
    ("/", None),
    ("", None),
    ("/api/auth/login/x", "auth"),          # a prefix of the deep one, not it
    ("/api/auth/login/x/y", "deep"),
    ("/api/auth/login/x/y/z", "deep"),
    ("/api/auth/login/x/yz", "auth"),
    ("/api/users" + "/a" * 1000, "users"),  # a long path costs no more than the prefixes
    ("/API/users", None),                   # case counts, as in the services
])
def test_the_longest_prefix_on_a_segment_boundary_matches(path: str, expected: str | None) -> None:
    found = TABLE.match(path)
    assert (found.name if found else None) == expected


def test_a_root_prefix_catches_everything_the_others_do_not() -> None:
    table = RouteTable([route("/", "all"), route("/api/users", "users")])
    assert table.match("/api/users/me").name == "users"  # type: ignore[union-attr]
    for path in ("/", "/x", "/api", "/api/usersx", "/api/users" + "x" * 100, ""):
        assert table.match(path).name == "all", path  # type: ignore[union-attr]


def test_an_empty_table_matches_nothing() -> None:
    table = RouteTable([])
    assert table.match("/api/users") is None
    assert len(table) == 0 and table.services == frozenset()


def test_two_routes_with_one_prefix_are_refused() -> None:
    with pytest.raises(ValueError, match="'/api/users'"):
        RouteTable([route("/api/users", "a"), route("/api/users", "b")])


def test_the_table_keeps_file_order_and_names_its_services() -> None:
    routes = [route("/b", "b", service="beta"), route("/a", "a", service="alpha"),
              route("/old", "old", service=LEGACY), route("/a/x", "ax", service="alpha")]
    table = RouteTable(routes)
    assert table.routes == tuple(routes) and list(table) == routes and len(table) == 4
    assert table.services == {"alpha", "beta"}  # the monolith is no service


@pytest.mark.parametrize(("prefix", "rewrite", "path", "upstream"), [
    ("/api/users", "/users", "/api/users", "/users"),
    ("/api/users", "/users", "/api/users/", "/users/"),
    ("/api/users", "/users", "/api/users/me", "/users/me"),
    ("/api/users", "/v2/people", "/api/users/me/x", "/v2/people/me/x"),
    ("/api/users", "", "/api/users/me", "/api/users/me"),  # no rewrite: as is
    ("/api", "/", "/api/users/me", "/users/me"),           # the prefix dropped
    ("/api", "/", "/api", "/"),
    ("/api", "/", "/api/", "/"),
    ("/", "/legacy", "/shop/cart", "/legacy/shop/cart"),   # everything moved below /legacy
    ("/", "/legacy", "/", "/legacy/"),
    ("/", "/", "/shop", "/shop"),
    ("/.well-known/jwks.json", "", "/.well-known/jwks.json", "/.well-known/jwks.json"),
])
def test_the_prefix_is_replaced_by_the_rewrite(prefix: str, rewrite: str, path: str,
                                                 upstream: str) -> None:
    assert route(prefix, rewrite=rewrite).upstream_path(path) == upstream


def test_a_route_is_a_frozen_value() -> None:
    r = route("/api/users", "users")
    with pytest.raises(AttributeError):
        r.prefix = "/x"  # type: ignore[misc]
    assert r == route("/api/users", "users") and hash(r) == hash(route("/api/users", "users"))


# --- the shipped table ----------------------------------------------------------------------

SETTINGS = GatewaySettings(_env_file=None, legacy_upstream_url=None,
                           gateway_default_rate_limit="600/60")
SHIPPED = load_route_table(DEFAULT_ROUTES_FILE, SETTINGS)


@pytest.mark.parametrize(("method", "path", "service", "upstream", "public"), [
    # the public API through the gateway
    ("POST", "/api/auth/register", "auth", "/auth/register", True),
    ("POST", "/api/auth/login", "auth", "/auth/login", True),
    ("POST", "/api/auth/refresh", "auth", "/auth/refresh", True),
    ("POST", "/api/auth/logout", "auth", "/auth/logout", False),
    ("GET", "/api/users/me", "user", "/users/me", False),
    ("POST", "/api/drivers", "driver", "/drivers", False),
    ("PUT", "/api/drivers/7f1c/status", "driver", "/drivers/7f1c/status", False),
    ("PUT", "/api/drivers/7f1c/location", "driver", "/drivers/7f1c/location", False),
    ("GET", "/api/drivers/nearby", "driver", "/drivers/nearby", False),
    ("GET", "/api/notifications", "notification", "/notifications", False),
    # and the rest of the services' paths
    ("POST", "/api/auth/password", "auth", "/auth/password", False),
    ("GET", "/api/auth/me", "auth", "/auth/me", False),
    ("GET", "/api/auth/roles", "auth", "/auth/roles", False),
    ("PUT", "/api/auth/roles/admin/permissions", "auth", "/auth/roles/admin/permissions", False),
    ("PUT", "/api/auth/users/u1/roles/admin", "auth", "/auth/users/u1/roles/admin", False),
    ("POST", "/api/auth/clients", "auth", "/auth/clients", False),
    ("POST", "/api/oauth/token", "auth", "/oauth/token", True),
    ("GET", "/.well-known/jwks.json", "auth", "/.well-known/jwks.json", True),
    ("PATCH", "/api/users/me", "user", "/users/me", False),
    ("GET", "/api/users", "user", "/users", False),
    ("GET", "/api/users/u1", "user", "/users/u1", False),
    ("GET", "/api/drivers/me", "driver", "/drivers/me", False),
    ("GET", "/api/drivers/7f1c/location", "driver", "/drivers/7f1c/location", False),
    ("GET", "/api/drivers/7f1c/locations/stream", "driver", "/drivers/7f1c/locations/stream",
     False),
    ("POST", "/api/notifications/n1/read", "notification", "/notifications/n1/read", False),
    ("POST", "/api/orders", "order", "/orders", False),
    ("GET", "/api/orders/o1/events", "order", "/orders/o1/events", False),
    ("POST", "/api/orders/o1/cancel", "order", "/orders/o1/cancel", False),
    ("GET", "/api/sagas/o1", "order", "/sagas/o1", False),
])
def test_the_shipped_table_routes_the_public_api(method: str, path: str, service: str,
                                                 upstream: str, public: bool) -> None:
    found = SHIPPED.match(path)
    assert found is not None, path
    assert (found.service, found.upstream_path(path), found.public) == (service, upstream, public)
    assert not found.methods or method in found.methods


def test_the_shipped_public_routes_are_exactly_the_token_endpoints() -> None:
    public = {r.prefix: r for r in SHIPPED if r.public}
    assert set(public) == {"/api/auth/register", "/api/auth/login", "/api/auth/refresh",
                           "/api/oauth/token", "/.well-known/jwks.json"}
    assert public.pop("/.well-known/jwks.json").methods == {"GET"}
    for r in public.values():  # the brute-force targets: POST only, a tight limit per client
        assert r.methods == {"POST"} and r.rate_limit is not None, r.name
        assert r.rate_limit.limit / r.rate_limit.window <= 1, r.name
        assert r.rate_limit.name == r.name


def test_the_shipped_table_checks_at_the_edge_only_permissions_every_caller_needs() -> None:
    needs = {r.name: r.permissions for r in SHIPPED if r.permissions}
    assert needs == {"auth-roles": {"rbac:manage"}, "auth-users": {"rbac:manage"},
                     "auth-clients": {"rbac:manage"}, "drivers-nearby": {"drivers:read"},
                     "notifications": {"notifications:read"}, "sagas": {"sagas:read"}}
    assert SHIPPED.match("/api/users/me").permissions == frozenset()  # type: ignore[union-attr]
    assert SHIPPED.match("/api/drivers").permissions == frozenset()  # type: ignore[union-attr]


def test_the_shipped_table_covers_the_services_and_nothing_else() -> None:
    assert SHIPPED.services == {"auth", "user", "driver", "notification", "order"}
    for path in ("/", "/api", "/api/unknown", "/api/authx/login", "/api/usersx",
                 "/.well-known/other", "/auth/login"):
        assert SHIPPED.match(path) is None, path  # unmatched: legacy or 404, never a service


def test_the_shipped_drivers_timeout_outlasts_the_services_own_waits() -> None:
    drivers = SHIPPED.match("/api/drivers/7f1c/locations/stream")
    assert drivers is not None and 5.0 < drivers.timeout <= 10.0
    assert all(r.timeout == 10.0 and r.retries == 1 for r in SHIPPED if r.name != "drivers")
