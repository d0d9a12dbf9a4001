"""Loading the route table file: defaults, and every mistake refused with a message that
names the file, the route and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.resilience import RateLimitPolicy
from gateway.routes import RouteTableError, load_route_table, parse_rate_limit
from gateway.tests.route_files import load, refusal, route_toml, settings

# --- what a valid file gives -----------------------------------------------------------------

def test_a_route_takes_what_it_does_not_set_from_the_defaults(tmp_path: Path) -> None:
    table = load(tmp_path, '[defaults]\ntimeout = 3\nretries = 0\nrate_limit = "5/2.5"\n'
                 + route_toml() + route_toml(name="b", prefix="/b", timeout=7.5, retries=2,
                                             rate_limit="none"))
    users, b = table.routes
    assert (users.timeout, users.retries) == (3.0, 0) and isinstance(users.timeout, float)
    assert users.rate_limit == RateLimitPolicy("users", 5, 2.5)  # named after its route
    assert (b.timeout, b.retries, b.rate_limit) == (7.5, 2, None)
    assert (users.rewrite, users.methods, users.public, users.permissions) == (
        "", frozenset(), False, frozenset())


def test_without_defaults_the_settings_and_constants_apply(tmp_path: Path) -> None:
    (users,) = load(tmp_path, route_toml(), gateway_default_rate_limit="100/10").routes
    assert (users.timeout, users.retries) == (10.0, 1)
    assert users.rate_limit == RateLimitPolicy("users", 100, 10)
    (users,) = load(tmp_path, route_toml(), gateway_default_rate_limit="").routes
    assert users.rate_limit is None


def test_every_field_of_a_route_is_read(tmp_path: Path) -> None:
    (r,) = load(tmp_path, route_toml(rewrite="/users", methods=["GET", "PATCH"], public=False,
                                     permissions=["users:read", "profile:write"], timeout=300,
                                     retries=5, rate_limit="1/0.5")).routes
    assert (r.rewrite, r.methods, r.permissions) == (
        "/users", frozenset({"GET", "PATCH"}), frozenset({"users:read", "profile:write"}))
    assert (r.timeout, r.retries, r.rate_limit) == (300.0, 5, RateLimitPolicy("users", 1, 0.5))


def test_an_empty_file_is_an_empty_table(tmp_path: Path) -> None:
    assert len(load(tmp_path, "")) == 0


def test_a_legacy_route_needs_the_legacy_url(tmp_path: Path) -> None:
    text = route_toml(service="legacy")
    assert "LEGACY_UPSTREAM_URL" in refusal(tmp_path, text)
    table = load(tmp_path, text, legacy_upstream_url="http://monolith:8080")
    assert table.routes[0].service == "legacy" and table.services == frozenset()


# --- mistakes, each naming its route and field -------------------------------------------------

WHERE = '[[routes]] #1 "users"'


@pytest.mark.parametrize(("fields", "field", "says"), [
    # unknown keys: a typo must never be ignored
    ({"pubic": True}, "pubic", 'unknown key "pubic" (did you mean "public"?)'),
    ({"permission": ["a:b"]}, "permission", 'did you mean "permissions"?'),
    ({"zzz": 1}, "zzz", "known: name, prefix, service"),
    # types
    ({"public": "yes"}, "public", "expected true or false, got 'yes'"),
    ({"public": 1}, "public", "expected true or false"),
    ({"timeout": "10"}, "timeout", "expected a number, got '10'"),
    ({"timeout": True}, "timeout", "expected a number"),
    ({"retries": 1.5}, "retries", "expected an integer, got 1.5"),
    ({"retries": True}, "retries", "expected an integer"),
    ({"methods": "GET"}, "methods", "expected a list of strings, got 'GET'"),
    ({"permissions": ["a:b", 1]}, "permissions", "expected a list of strings"),
    ({"rewrite": 1}, "rewrite", "expected a string"),
    ({"rate_limit": 100}, "rate_limit", "expected a string, got 100"),
    # required
    ({"prefix": None}, "prefix", "missing (every route needs name, prefix, service)"),
    ({"service": None}, "service", "missing"),
    # prefix
    ({"prefix": "api/users"}, "prefix", "must start with \"/\""),
    ({"prefix": ""}, "prefix", "must start with \"/\""),
    ({"prefix": "/api//users"}, "prefix", "contains '//'"),
    ({"prefix": "/api/../admin"}, "prefix", "contains '..'"),
    ({"prefix": "/api/./users"}, "prefix", 'contains a "." segment'),
    ({"prefix": "/api/users?x=1"}, "prefix", "contains '?' (a query)"),
    ({"prefix": "/api/users#top"}, "prefix", "contains '#' (a fragment)"),
    ({"prefix": "/api/users/"}, "prefix", "ends with \"/\""),
    ({"prefix": "/api/drivers/{id}/stream"}, "prefix", "not templates"),
    ({"prefix": "/api/user s"}, "prefix", "contains ' '"),
    ({"prefix": "/api/users%2Fme"}, "prefix", "contains '%'"),
    # rewrite
    ({"rewrite": "users"}, "rewrite", "must start with \"/\""),
    ({"rewrite": "/users/"}, "rewrite", "ends with \"/\""),
    ({"rewrite": "/a/../b"}, "rewrite", "contains '..'"),
    ({"rewrite": "/users?all"}, "rewrite", "contains '?'"),
    # methods
    ({"methods": ["FETCH"]}, "methods", "'FETCH' is not an HTTP method"),
    ({"methods": ["get"]}, "methods", "methods are upper-case ('GET')"),
    ({"methods": ["TRACE"]}, "methods", "'TRACE' is not an HTTP method"),
    ({"methods": ["CONNECT"]}, "methods", "'CONNECT' is not an HTTP method"),
    ({"methods": ["GET", "GET"]}, "methods", "lists a method twice"),
    # permissions
    ({"public": True, "permissions": ["users:read"]}, "permissions",
     "a public route checks no token, so it cannot require permissions"),
    ({"permissions": ["users-read"]}, "permissions", "'users-read' is not a permission"),
    ({"permissions": [""]}, "permissions", "'' is not a permission"),
    # numbers
    ({"timeout": 0}, "timeout", "must be more than 0 and at most 300 seconds"),
    ({"timeout": -1.5}, "timeout", "must be more than 0"),
    ({"timeout": 300.5}, "timeout", "at most 300"),
    ({"retries": -1}, "retries", "must be between 0 and 5"),
    ({"retries": 6}, "retries", "must be between 0 and 5"),
    # rate limits
    ({"rate_limit": "10"}, "rate_limit", 'is not "limit/window_seconds"'),
    ({"rate_limit": "ten/60"}, "rate_limit", 'is not "limit/window_seconds"'),
    ({"rate_limit": "10 / 60"}, "rate_limit", 'is not "limit/window_seconds"'),
    ({"rate_limit": "-1/60"}, "rate_limit", 'is not "limit/window_seconds"'),
    ({"rate_limit": "10/60s"}, "rate_limit", 'is not "limit/window_seconds"'),
    ({"rate_limit": "None"}, "rate_limit", 'nor "none"'),
    ({"rate_limit": "0/60"}, "rate_limit", "the limit must be at least 1"),
    ({"rate_limit": "10/0"}, "rate_limit", "the window must be more than 0 seconds"),
    ({"rate_limit": "10/0.0"}, "rate_limit", "the window must be more than 0 seconds"),
    # names
    ({"service": "User"}, "service", "'User' is not a valid service name"),
    ({"service": "1user"}, "service", "is not a valid service name (it must match [a-z]"),
    ({"service": "user_svc"}, "service", "is not a valid service name"),
    ({"service": ""}, "service", "'' is not a valid service name"),
    ({"service": "legacy"}, "service",
     '"legacy" sends requests to LEGACY_UPSTREAM_URL, which is not set'),
])
def test_a_mistake_in_a_route_is_refused_naming_it(tmp_path: Path, fields: dict[str, Any],
                                                   field: str, says: str) -> None:
    message = refusal(tmp_path, route_toml(**fields))
    assert f"{WHERE}: {field}: " in message and says in message, message


@pytest.mark.parametrize(("name", "says"), [
    ("Users", "'Users' is not a valid route name"),
    ("-users", "is not a valid route name (it must match [a-z0-9]"),
    ("users_1", "is not a valid route name"),
    ("a\"b", "is not a valid route name"),
    ("", "'' is not a valid route name"),
])
def test_a_bad_route_name_is_refused(tmp_path: Path, name: str, says: str) -> None:
    message = refusal(tmp_path, route_toml(name=name))
    assert f"[[routes]] #1 {json.dumps(name)}: name: " in message and says in message, message


def test_a_route_without_a_name_is_named_by_its_place(tmp_path: Path) -> None:
    message = refusal(tmp_path, route_toml() + route_toml(name=None, prefix="/b"))
    assert "[[routes]] #2: name: missing" in message, message


def test_duplicate_names_and_prefixes_name_both_routes(tmp_path: Path) -> None:
    message = refusal(tmp_path, route_toml() + route_toml(prefix="/other")
                      + route_toml(name="again"))
    assert f'[[routes]] #2 "users": name: {"users"!r} is already the name of route #1' in message
    assert "[[routes]] #3 \"again\": prefix: '/api/users' is already the prefix of route #1" in (
        message)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = refusal(tmp_path, '[defaults]\ntimeout = 0\n' + route_toml(pubic=True)
                      + route_toml(name="b", prefix="b", methods=["FETCH"]))
    assert message.startswith(f"route table {tmp_path / 'routes.toml'}: 4 problems:\n")
    for line in ("[defaults]: timeout: ", '[[routes]] #1 "users": pubic: ',
                 '[[routes]] #2 "b": prefix: ', '[[routes]] #2 "b": methods: '):
        assert f"\n  - {line}" in message, message


def test_one_problem_is_one_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, route_toml(retries=9))
    assert message == (f"route table {tmp_path / 'routes.toml'}: {WHERE}: retries: 9 must be "
                       "between 0 and 5")


# --- the file as a whole ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "says"), [
    ('[[route]]\nname = "x"\n', 'the file: route: unknown key "route" (did you mean "routes"?)'),
    ("[default]\ntimeout = 1\n", 'unknown key "default" (did you mean "defaults"?)'),
    ('routes = "all"\n', "routes: expected an array of tables ([[routes]])"),
    ("defaults = 3\n", "defaults: expected a table ([defaults])"),
    ("routes = [1]\n", "[[routes]] #1: expected a table, got 1"),
    ("[defaults]\ntimout = 5\n", '[defaults]: timout: unknown key "timout" (did you mean'),
    ("[defaults]\nname = \"x\"\n", '[defaults]: name: unknown key "name" (known: timeout, '),
    ("[defaults]\ntimeout = 400\n", "[defaults]: timeout: 400 must be more than 0 and at most"),
    ("[defaults]\nretries = -2\n", "[defaults]: retries: -2 must be between 0 and 5"),
    ('[defaults]\nrate_limit = "fast"\n', "[defaults]: rate_limit: 'fast' is not"),
    ("[defaults]\ntimeout = \"1\"\n", "[defaults]: timeout: expected a number, got '1'"),
])
def test_a_mistake_outside_the_routes_is_refused_naming_it(tmp_path: Path, text: str,
                                                           says: str) -> None:
    message = refusal(tmp_path, text)
    assert says in message, message


def test_a_bad_default_rate_limit_setting_is_named(tmp_path: Path) -> None:
    message = refusal(tmp_path, route_toml(), gateway_default_rate_limit="lots")
    assert "the GATEWAY_DEFAULT_RATE_LIMIT setting: 'lots' is not" in message, message
    load(tmp_path, '[defaults]\nrate_limit = "1/1"\n' + route_toml(),  # unused: no matter
         gateway_default_rate_limit="lots")


def test_invalid_toml_is_refused_with_its_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, route_toml() + 'name = "twice"\n')
    assert "is not valid TOML" in message and "line 5" in message, message
    message = refusal(tmp_path, '[[routes]]\nname = "users\n')
    assert "is not valid TOML" in message and "line 2" in message, message


def test_an_unreadable_file_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(RouteTableError, match=f"route table {missing}: cannot be read: "
                       "No such file or directory"):
        load_route_table(missing, settings())
    with pytest.raises(RouteTableError, match="cannot be read: Is a directory"):
        load_route_table(tmp_path, settings())
    (tmp_path / "latin1.toml").write_bytes(b'[[routes]]\nname = "caf\xe9"\n')
    with pytest.raises(RouteTableError, match=r"latin1\.toml: is not UTF-8 text"):
        load_route_table(tmp_path / "latin1.toml", settings())


@pytest.mark.parametrize(("text", "policy"), [
    ("none", None), ("", None), ("1/1", RateLimitPolicy("r", 1, 1)),
    ("600/60", RateLimitPolicy("r", 600, 60)), ("3/0.25", RateLimitPolicy("r", 3, 0.25)),
])
def test_rate_limits_parse(text: str, policy: RateLimitPolicy | None) -> None:
    assert parse_rate_limit(text, "r") == policy
