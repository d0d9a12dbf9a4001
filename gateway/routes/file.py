"""Reading the route table file: TOML, validated whole, every problem reported at once with
its place (the file, the route, the field), because a typo in a security setting
(`pubic = true`, `permision = ...`) must stop the gateway rather than be ignored."""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.resilience import RateLimitPolicy
from gateway.routes.checks import (
    PERMISSION,
    ROUTE_NAME,
    SERVICE_NAME,
    methods_problem,
    name_problem,
    parse_rate_limit,
    path_problem,
    retries_problem,
    timeout_problem,
)
from gateway.routes.table import DEFAULT_RETRIES, DEFAULT_TIMEOUT, LEGACY, Route, RouteTable

if TYPE_CHECKING:
    from gateway.config import GatewaySettings


class RouteTableError(Exception):
    """The route table file cannot be used; `problems` lists every reason found."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        if len(problems) == 1:
            message = f"route table {path}: {problems[0]}"
        else:
            message = f"route table {path}: {len(problems)} problems:\n" + "\n".join(
                f"  - {problem}" for problem in problems)
        super().__init__(message)


def load_route_table(path: Path, settings: GatewaySettings) -> RouteTable:
    """Read and validate the table at `path`. Raises RouteTableError naming every problem.

    `[defaults]` falls back to 10 s, 1 retry, and GATEWAY_DEFAULT_RATE_LIMIT; a route's
    rate-limit policy is named after the route, so its quota is its own."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise RouteTableError(path, [f"cannot be read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise RouteTableError(path, [f"is not UTF-8 text: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise RouteTableError(path, [f"is not valid TOML: {exc}"]) from exc
    loader = _Loader(settings)
    routes = loader.load(document)
    if loader.problems:
        raise RouteTableError(path, loader.problems)
    return RouteTable(routes)


_TYPES: dict[type, str] = {str: "a string", bool: "true or false", int: "an integer",
                           float: "a number", list: "a list of strings"}
_ROUTE_FIELDS: dict[str, type] = {
    "name": str, "prefix": str, "service": str, "rewrite": str, "methods": list,
    "public": bool, "permissions": list, "timeout": float, "retries": int, "rate_limit": str,
    "idle_timeout": float, "max_streams": int, "max_client_streams": int}
_DEFAULT_FIELDS = {key: _ROUTE_FIELDS[key] for key in ("timeout", "retries", "rate_limit")}
_REQUIRED = ("name", "prefix", "service")
_MISSING: Any = object()


def _is(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    if kind is list:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, kind)


class _Loader:
    """Walks one parsed document, collecting problems instead of stopping at the first."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.problems: list[str] = []

    def load(self, document: Mapping[str, Any]) -> list[Route]:
        self._unknown_keys("the file", document, {"defaults": dict, "routes": list})
        defaults = document.get("defaults", {})
        if not isinstance(defaults, dict):
            self.problems.append("defaults: expected a table ([defaults])")
            defaults = {}
        timeout, retries, rate_limit = self._defaults(defaults)
        entries = document.get("routes", [])
        if not isinstance(entries, list):
            self.problems.append("routes: expected an array of tables ([[routes]])")
            entries = []
        routes: list[Route] = []
        names: dict[str, int] = {}
        prefixes: dict[str, int] = {}
        for number, entry in enumerate(entries, start=1):
            where = f"[[routes]] #{number}"
            if not isinstance(entry, dict):
                self.problems.append(f"{where}: expected a table, got {entry!r}")
                continue
            if isinstance(entry.get("name"), str):
                where += f" {json.dumps(entry['name'])}"
            values = self._fields(where, entry, _ROUTE_FIELDS)
            route = self._route(where, entry, values, timeout, retries, rate_limit)
            for key, seen in (("name", names), ("prefix", prefixes)):
                value = values.get(key)
                if isinstance(value, str) and seen.setdefault(value, number) != number:
                    self.problems.append(
                        f"{where}: {key}: {value!r} is already the {key} of route #{seen[value]}")
            if route is not None:
                routes.append(route)
        return routes

    def _defaults(self, table: Mapping[str, Any]) -> tuple[float, int, str]:
        values = self._fields("[defaults]", table, _DEFAULT_FIELDS)
        timeout = values.get("timeout", DEFAULT_TIMEOUT)
        retries = values.get("retries", DEFAULT_RETRIES)
        if (problem := timeout_problem(timeout)) is not None:
            self.problems.append(f"[defaults]: timeout: {problem}")
            timeout = DEFAULT_TIMEOUT
        if (problem := retries_problem(retries)) is not None:
            self.problems.append(f"[defaults]: retries: {problem}")
            retries = DEFAULT_RETRIES
        where = "[defaults]: rate_limit"
        if "rate_limit" not in values:
            rate_limit = self.settings.gateway_default_rate_limit
            where = "the GATEWAY_DEFAULT_RATE_LIMIT setting"
        else:
            rate_limit = values["rate_limit"]
        try:
            parse_rate_limit(rate_limit, "defaults")
        except ValueError as exc:
            self.problems.append(f"{where}: {exc}")
            rate_limit = "none"
        return float(timeout), int(retries), rate_limit

    def _fields(self, where: str, table: Mapping[str, Any],
                fields: Mapping[str, type]) -> dict[str, Any]:
        """The known keys of `table` that have the right type; problems for the rest."""
        self._unknown_keys(where, table, fields)
        values: dict[str, Any] = {}
        for key, kind in fields.items():
            value = table.get(key, _MISSING)
            if value is _MISSING:
                continue
            if _is(value, kind):
                values[key] = value
            else:
                self.problems.append(f"{where}: {key}: expected {_TYPES[kind]}, got {value!r}")
        return values

    def _unknown_keys(self, where: str, table: Mapping[str, Any],
                      known: Mapping[str, type]) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f'did you mean "{close[0]}"?' if close else f"known: {', '.join(known)}"
                self.problems.append(f'{where}: {key}: unknown key "{key}" ({hint})')

    def _route(self, where: str, given: Mapping[str, Any], values: Mapping[str, Any],
               default_timeout: float,
               default_retries: int, default_rate_limit: str) -> Route | None:
        """The route `values` (the well-typed part of `given`) describe, or None (with
        problems) when they do not."""
        problems = self.problems
        before = len(problems)

        def check(key: str, problem: str | None) -> None:
            if problem is not None:
                problems.append(f"{where}: {key}: {problem}")

        for key in _REQUIRED:
            if key not in given:
                check(key, f"missing (every route needs {', '.join(_REQUIRED)})")
        name, prefix = values.get("name", ""), values.get("prefix", "/")
        service, rewrite = values.get("service", ""), values.get("rewrite", "")
        if "name" in values:
            check("name", name_problem(name, ROUTE_NAME, "route name"))
        check("prefix", path_problem(prefix))
        check("rewrite", path_problem(rewrite) if rewrite else None)
        if "service" in values:
            check("service", name_problem(service, SERVICE_NAME, "service name"))
        if service == LEGACY and self.settings.legacy_upstream_url is None:
            check("service", '"legacy" sends requests to LEGACY_UPSTREAM_URL, which is not set')
        methods = values.get("methods", [])
        for method in methods:
            check("methods", methods_problem(method))
        if len(set(methods)) != len(methods):
            check("methods", f"{methods!r} lists a method twice")
        permissions = values.get("permissions", [])
        for permission in permissions:
            check("permissions", None if PERMISSION.fullmatch(permission) else
                  f"{permission!r} is not a permission (resource:action, such as "
                  '"drivers:read")')
        public = values.get("public", False)
        if public and permissions:
            check("permissions", "a public route checks no token, so it cannot require "
                  "permissions: drop one or the other")
        timeout = float(values.get("timeout", default_timeout))
        check("timeout", timeout_problem(timeout))
        retries = values.get("retries", default_retries)
        check("retries", retries_problem(retries))
        rate_limit: RateLimitPolicy | None = None
        try:
            rate_limit = parse_rate_limit(values.get("rate_limit", default_rate_limit),
                                          name if ROUTE_NAME.fullmatch(name) else "route")
        except ValueError as exc:
            check("rate_limit", str(exc))
        idle_timeout = float(values.get("idle_timeout", self.settings.gateway_idle_timeout))
        check("idle_timeout", None if 0 < idle_timeout <= 3600 else
              f"{idle_timeout!r} must be more than 0 and at most 3600 seconds")
        streams = {key: values.get(key, getattr(self.settings, f"gateway_{key}"))
                   for key in ("max_streams", "max_client_streams")}
        for key, cap in streams.items():
            check(key, None if cap >= 1 else f"{cap!r} must be at least 1")
        if len(problems) > before:
            return None
        return Route(name=name, prefix=prefix, service=service, rewrite=rewrite,
                     methods=frozenset(methods), public=public,
                     permissions=frozenset(permissions), timeout=timeout, retries=retries,
                     rate_limit=rate_limit, idle_timeout=idle_timeout, **streams)
