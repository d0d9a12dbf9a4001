"""The proxy's stream caps and redirect rewriting without processes (the processes' side:
test_gateway_connections.py), and the route table's options for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.proxy import _public_location, _public_path
from gateway.routes.table import Route
from gateway.streams import StreamSlots
from gateway.tests.route_files import load, refusal, route_toml

UPSTREAM = "http://127.0.0.1:9101"


def _route(prefix: str = "/api/auth", rewrite: str = "/auth", max_streams: int = 1000,
           max_client_streams: int = 8) -> Route:
    return Route(name="r", prefix=prefix, service="auth", rewrite=rewrite,
                 max_streams=max_streams, max_client_streams=max_client_streams)


@pytest.mark.parametrize(("prefix", "rewrite", "upstream", "public"), [
    ("/api/auth", "/auth", "/auth/login", "/api/auth/login"),
    ("/api/auth", "/auth", "/auth", "/api/auth"),
    ("/api/auth", "/auth", "/auth/", "/api/auth/"),
    ("/api/auth", "/auth", "/authx", None),
    ("/api/auth", "/auth", "/users/me", None),
    ("/api/auth", "", "/api/auth/login", "/api/auth/login"),
    ("/api/auth", "", "/auth/login", None),
    ("/api/auth", "/", "/login", "/api/auth/login"),
    ("/api/auth", "/", "/", "/api/auth/"),
    ("/", "/v1", "/v1/x", "/x"),
    ("/", "", "/anything", "/anything"),
])
def test_an_upstream_path_maps_back_to_the_public_one(prefix: str, rewrite: str,
                                                      upstream: str, public: str | None) -> None:
    route = _route(prefix, rewrite)
    assert _public_path(upstream, route) == public
    if public is not None:  # and the route sends that public path to the upstream path
        assert route.upstream_path(public) == upstream


def test_a_location_at_an_upstream_gets_the_public_path() -> None:
    origins = {UPSTREAM}
    route = _route()
    assert _public_location(f"{UPSTREAM}/auth/login", route, origins) == "/api/auth/login"
    assert _public_location("HTTP://127.0.0.1:9101/auth/login?a=1#f", route,
                            origins) == "/api/auth/login?a=1#f"
    assert _public_location("/auth/login?next=/x", route, origins) == "/api/auth/login?next=/x"


def test_other_locations_are_left_alone() -> None:
    route = _route()
    for location in ("https://example.com/auth/login", "http://127.0.0.1:9102/auth/x",
                     "login", "../login", "?page=2"):
        assert _public_location(location, route, {UPSTREAM}) == location


@pytest.mark.parametrize("location", [f"{UPSTREAM}/users/me", "/internal/admin",
                                      f"{UPSTREAM}/authx"])
def test_a_location_no_public_path_leads_to_is_502(location: str) -> None:
    with pytest.raises(GatewayError) as refused:
        _public_location(location, _route(), {UPSTREAM})
    assert refused.value.status == 502 and refused.value.code == "bad_gateway"
    assert "127.0.0.1" not in refused.value.message


def test_streams_are_counted_per_client_and_route_and_given_back() -> None:
    slots, route = StreamSlots(), _route(max_streams=3, max_client_streams=2)
    with slots.hold(route, "user:a"), slots.hold(route, "user:a"):
        assert slots.open("r") == 2 and slots.open("r", "user:a") == 2
        with pytest.raises(GatewayError) as mine:
            with slots.hold(route, "user:a"):
                pass
        assert mine.value.status == 429 and mine.value.code == "too_many_streams"
        assert mine.value.headers == {"Retry-After": "1"}
        assert "2" in mine.value.message
        with slots.hold(route, "user:b"):
            with pytest.raises(GatewayError) as full:
                with slots.hold(route, "user:c"):
                    pass
            assert full.value.status == 503 and full.value.code == "streams_full"
            assert full.value.headers == {"Retry-After": "1"}
        assert slots.open("r") == 2 and slots.open("r", "user:b") == 0
    assert slots.open("r") == 0 and slots.open("r", "user:a") == 0
    assert slots._routes == {} and slots._clients == {}  # nothing kept per client gone


def test_a_stream_that_fails_is_given_back_too() -> None:
    slots, route = StreamSlots(), _route(max_streams=1, max_client_streams=1)
    with pytest.raises(RuntimeError), slots.hold(route, "ip:1.2.3.4"):
        raise RuntimeError("cut")
    with slots.hold(route, "ip:1.2.3.4"):
        assert slots.open("r", "ip:1.2.3.4") == 1


def test_routes_count_apart() -> None:
    slots = StreamSlots()
    one = Route(name="one", prefix="/a", service="s", max_streams=1, max_client_streams=1)
    two = Route(name="two", prefix="/b", service="s", max_streams=1, max_client_streams=1)
    with slots.hold(one, "c"), slots.hold(two, "c"):
        assert slots.open("one") == slots.open("two") == 1


def test_a_route_sets_its_stream_caps_and_idle_timeout_or_takes_the_settings(
        tmp_path: Path) -> None:
    table = load(tmp_path, route_toml() + route_toml(
        name="stream", prefix="/api/stream", idle_timeout=2.5, max_streams=3,
        max_client_streams=1), gateway_idle_timeout=30.0, gateway_max_streams=50,
        gateway_max_client_streams=4)
    users, stream = table.routes
    assert (users.idle_timeout, users.max_streams, users.max_client_streams) == (30.0, 50, 4)
    assert (stream.idle_timeout, stream.max_streams, stream.max_client_streams) == (2.5, 3, 1)


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("idle_timeout", 0, "must be more than 0 and at most 3600 seconds"),
    ("idle_timeout", 3601, "must be more than 0 and at most 3600 seconds"),
    ("idle_timeout", "1", "expected a number"),
    ("max_streams", 0, "must be at least 1"),
    ("max_client_streams", 0, "must be at least 1"),
    ("max_client_streams", 1.5, "expected an integer"),
])
def test_bad_stream_options_are_refused_with_their_field(tmp_path: Path, field: str,
                                                         value: Any, problem: str) -> None:
    message = refusal(tmp_path, route_toml(**{field: value}))
    assert f'"users": {field}: ' in message and problem in message
