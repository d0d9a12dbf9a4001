"""Helpers for the OpenAPI tests: a stand-in route table (README's contract for
`gateway.routes`), small hand-made specs, and a checker for dangling references."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gateway.routes.table import Route, RouteTable

__all__ = ["Route", "RouteTable"]

Json = dict[str, Any]


def table(*routes: Route) -> RouteTable:
    return RouteTable(routes)


def op(op_id: str, *, schema: str | None = None, tags: tuple[str, ...] = (),
       security: list[Json] | None = None) -> Json:
    """An operation answering 200 with `schema` (a component name) or nothing."""
    response: Json = {"description": "ok"}
    if schema is not None:
        response["content"] = {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"}}}
    out: Json = {"operationId": op_id, "responses": {"200": response}}
    if tags:
        out["tags"] = list(tags)
    if security is not None:
        out["security"] = security
    return out


def spec(title: str, paths: Json, schemas: Json | None = None, **extra: Any) -> Json:
    return {"openapi": "3.1.0", "info": {"title": title, "version": "1.0.0"},
            "paths": paths, "components": {"schemas": schemas or {}}, **extra}


def operations(doc: Mapping[str, Any]) -> Iterator[tuple[str, str, Json]]:
    """(path, method, operation) of every operation in `doc`."""
    for path, item in doc["paths"].items():
        for method, value in item.items():
            if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
                yield path, method, value


def dangling_refs(doc: Mapping[str, Any]) -> list[str]:
    """Every local `$ref` (and discriminator mapping) that does not resolve in `doc`, and every
    security requirement naming an undeclared scheme."""
    problems: list[str] = []
    schemes = doc.get("components", {}).get("securitySchemes", {})

    def resolves(ref: str) -> bool:
        node: Any = doc
        for raw in ref[2:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
        return True

    def walk(value: Any, where: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                refs = ([item] if key == "$ref" else list(item.values())
                        if key == "mapping" and "propertyName" in value else [])
                for ref in refs:
                    if isinstance(ref, str) and ref.startswith("#") and not resolves(ref):
                        problems.append(f"{where}: {ref}")
                if key == "security" and isinstance(item, list):
                    problems.extend(f"{where}: security scheme {name}" for requirement in item
                                    for name in requirement if name not in schemes)
                walk(item, f"{where}/{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}/{i}")

    walk(doc, "#")
    return problems


def reference_specs(tmp: Path) -> dict[str, Json]:
    """Each reference service's own document, from its app (built, never started: no Kafka,
    no database connection; the databases and keys would go under `tmp`)."""
    from services.auth.config import AuthSettings
    from services.auth.main import create_app as auth_app
    from services.driver.config import DriverSettings
    from services.driver.main import create_app as driver_app
    from services.notification.config import NotificationSettings
    from services.notification.main import create_app as notification_app
    from services.order.config import OrderSettings
    from services.order.main import create_app as order_app
    from services.user.config import UserSettings
    from services.user.main import create_app as user_app

    def common(name: str) -> dict[str, Any]:
        return {"_env_file": None, "database_url": f"sqlite+aiosqlite:///{tmp / name}.db",
                "registry_backend": "static", "registry_static": "",
                "jwks_url": "http://127.0.0.1:9/.well-known/jwks.json",
                "jwt_keys_dir": str(tmp / "keys")}

    return {
        "auth": auth_app(AuthSettings(**common("auth"))).openapi(),
        "user": user_app(UserSettings(**common("user"))).openapi(),
        "driver": driver_app(DriverSettings(**common("driver"))).openapi(),
        "notification": notification_app(
            NotificationSettings(**common("notification"))).openapi(),
        "order": order_app(OrderSettings(**common("order"))).openapi(),
    }
