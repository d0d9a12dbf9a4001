"""Helpers for the OpenAPI tests: a stand-in route table (README's contract for
`gateway.routes`), small hand-made specs, and a checker for dangling references."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Route:
    """The fields of `gateway.routes.Route` the merge reads, with README's semantics."""

    name: str
    prefix: str
    service: str
    rewrite: str = ""
    methods: frozenset[str] = frozenset()
    public: bool = False
    permissions: frozenset[str] = frozenset()

    def upstream_path(self, path: str) -> str:
        return self.rewrite + path[len(self.prefix):] if self.rewrite else path


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes: tuple[Route, ...] = field(default_factory=tuple)

    def match(self, path: str) -> Route | None:
        """The longest prefix that matches on a segment boundary."""
        best: Route | None = None
        for route in self.routes:
            if (path == route.prefix or path.startswith(route.prefix.rstrip("/") + "/")) and (
                    best is None or len(route.prefix) > len(best.prefix)):
                best = route
        return best


def table(*routes: Route) -> RouteTable:
    return RouteTable(tuple(routes))


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
