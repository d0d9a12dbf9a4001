"""The merge: one OpenAPI document from the services' own, at the gateway's paths.

Each service path appears re-rooted under the gateway path that really reaches it (the route
`RouteTable.match` picks for that path, and only the methods that route lets through), once.
Components keep their names when every service means the same by them and become
`<service>__<Name>` when they differ, with the `$ref`s rewritten; only the components the kept
paths use are carried. Security is the gateway's: public routes need nothing, the others a
bearer token. Every operation also declares the statuses the gateway itself answers before or
instead of the service (`edge.py`), with the gateway's error body, unless the service declares
that status itself.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any, Protocol

from fastapi.openapi.utils import get_openapi

from core.health_check import HealthChecks
from gateway.openapi.edge import add_error_schema, declare_edge_statuses
from gateway.openapi.refs import ComponentKey, Renames, component_refs, rewrite_refs

Json = dict[str, Any]
LEGACY = "legacy"
GATEWAY = "gateway"
BEARER = "bearerAuth"
OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BEARER_SCHEME: Json = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "description": "An access token from the auth service "
                                      "(POST /api/auth/login)"}


class RouteLike(Protocol):
    """What the merge reads of `gateway.routes.Route`."""

    @property
    def prefix(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def rewrite(self) -> str: ...
    @property
    def methods(self) -> Set[str]: ...
    @property
    def public(self) -> bool: ...
    @property
    def permissions(self) -> Set[str]: ...
    @property
    def rate_limit(self) -> object | None: ...
    def upstream_path(self, path: str) -> str: ...


class TableLike(Protocol):
    """What the merge reads of `gateway.routes.RouteTable`."""

    @property
    def routes(self) -> Sequence[RouteLike]: ...
    def match(self, path: str) -> RouteLike | None: ...


def gateway_spec() -> Json:
    """The gateway's own paths (`/health/live`, `/health/ready`), as core's health router
    describes them: the gateway serves that router."""
    return copy.deepcopy(_gateway_spec())


@functools.cache
def _gateway_spec() -> Json:
    return get_openapi(title=GATEWAY, version="", description="The gateway itself.",
                       routes=HealthChecks().router().routes)


def merge_openapi(table: TableLike, specs: Mapping[str, Mapping[str, Any]], *, title: str,
                  version: str, own: Mapping[str, Any] | None = None,
                  unavailable: Iterable[str] = ()) -> Json:
    """The merged document (openapi 3.1.0) of `specs` (service name -> its document) as
    `table` routes them, plus `own` (the gateway's paths; `gateway_spec()` when None).
    Services in `unavailable` are listed in `info["x-unavailable-services"]`. Pure: the
    inputs are not changed; a service with no spec, or no reachable path, is left out."""
    own = _gateway_spec() if own is None else own
    own_paths = set(_mapping(own.get("paths")))
    picked = _pick(table, specs, own_paths)
    sources: dict[str, Mapping[str, Any]] = {GATEWAY: own}
    sources.update((service, specs[service]) for service in picked)
    ops: dict[str, list[tuple[str, str, str, RouteLike | None]]] = {
        GATEWAY: [(path, path, method, None) for path, item in _mapping(own.get("paths")).items()
                  for method in OPERATIONS if _is_operation(item, method)]}
    for service, chosen in picked.items():
        ops[service] = [(spath, gpath, method, route)
                        for (spath, method), (route, gpath) in chosen.items()]

    kept = {service: _reachable(spec, _used(spec, ops[service]))
            for service, spec in sources.items()}
    renames = _resolve_clashes(kept)
    components: dict[str, Json] = {}
    for service, comps in kept.items():
        for (kind, name), value in comps.items():
            new_name = renames[service].get((kind, name), name)
            components.setdefault(kind, {})[new_name] = rewrite_refs(value, renames[service])
    components.setdefault("securitySchemes", {})[BEARER] = dict(BEARER_SCHEME)
    error_ref = add_error_schema(components)

    paths: dict[str, Json] = {}
    operations: list[tuple[str, Json]] = []
    for service, service_ops in ops.items():
        spec_paths = _mapping(sources[service].get("paths"))
        for spath, gpath, method, route in service_ops:
            item = _mapping(spec_paths.get(spath))
            target = paths.setdefault(gpath, {
                key: rewrite_refs(value, renames[service]) for key, value in item.items()
                if key not in OPERATIONS and key != "servers"})
            op = _operation(service, item[method], item, sources[service], route,
                            renames[service])
            declare_edge_statuses(op, route, error_ref)
            target[method] = op
            operations.append((service, op))
    _unique_operation_ids(operations)

    doc: Json = {
        "openapi": "3.1.0",
        "info": _info(title, version, sources, unavailable),
        "paths": paths,
        "components": components,
        "tags": _tags(sources),
    }
    return doc


def _mapping(value: object) -> Mapping[str, Any]:
    """`value` when it is a mapping, else empty: a malformed part of a service's document
    is left out rather than failing the whole docs page."""
    return value if isinstance(value, Mapping) else {}


def _is_operation(item: object, method: str) -> bool:
    return isinstance(_mapping(item).get(method), Mapping)


def _pick(table: TableLike, specs: Mapping[str, Mapping[str, Any]], own_paths: Set[str],
          ) -> dict[str, dict[tuple[str, str], tuple[RouteLike, str]]]:
    """service -> (service path, method) -> (route, gateway path), in the table's order of
    services and each spec's order of paths. A service path is taken through a route only
    when the gateway sends that route's path to it (`match` and `upstream_path` agree) and
    the route allows the method; of several such routes the longest prefix wins."""
    picked: dict[str, dict[tuple[str, str], tuple[RouteLike, str]]] = {}
    for route in table.routes:
        spec = specs.get(route.service)
        if route.service == LEGACY or spec is None:
            continue
        chosen = picked.setdefault(route.service, {})
        for spath, item in _mapping(spec.get("paths")).items():
            gpath = _gateway_path(route, spath)
            if (gpath is None or gpath in own_paths or table.match(gpath) is not route
                    or route.upstream_path(gpath) != spath):
                continue
            for method in OPERATIONS:
                if not _is_operation(item, method) or (
                        route.methods and method.upper() not in route.methods):
                    continue
                best = chosen.get((spath, method))
                if best is None or len(route.prefix) > len(best[0].prefix):
                    chosen[(spath, method)] = (route, gpath)
    ordered: dict[str, dict[tuple[str, str], tuple[RouteLike, str]]] = {}
    for service, chosen in picked.items():
        if chosen:
            order = {(spath, method): i for i, (spath, method) in enumerate(
                (p, m) for p, item in _mapping(specs[service].get("paths")).items()
                for m in OPERATIONS if _is_operation(item, m))}
            ordered[service] = dict(sorted(chosen.items(), key=lambda kv: order[kv[0]]))
    return ordered


def _gateway_path(route: RouteLike, spath: str) -> str | None:
    """The inverse of `Route.upstream_path`: the gateway path `route` sends to `spath`, or
    None when `spath` is not under what the route forwards to."""
    base = (route.rewrite or route.prefix).rstrip("/")
    if spath == base:
        return route.prefix
    if spath.startswith(base + "/"):
        return route.prefix.rstrip("/") + spath[len(base):]
    return None


def _used(spec: Mapping[str, Any], ops: Iterable[tuple[str, str, str, object]],
          ) -> list[object]:
    """The parts of `spec`'s path items that the merged document keeps: the chosen
    operations and their items' shared keys (parameters)."""
    paths = _mapping(spec.get("paths"))
    used: list[object] = []
    for spath, _, method, _ in ops:
        item = _mapping(paths.get(spath))
        used += [item[method], {k: v for k, v in item.items() if k not in OPERATIONS}]
    return used


def _reachable(spec: Mapping[str, Any], items: Iterable[object]) -> dict[ComponentKey, Any]:
    """The components of `spec` that the given path items use, directly or through other
    components; security schemes are the gateway's and are dropped."""
    comps = _mapping(spec.get("components"))
    found: dict[ComponentKey, Any] = {}
    todo = [ref for item in items for ref in component_refs(item)]
    while todo:
        key = todo.pop()
        kind, name = key
        if key in found or kind == "securitySchemes" or name not in _mapping(comps.get(kind)):
            continue  # a dangling reference stays dangling: the service's own bug
        found[key] = comps[kind][name]
        todo.extend(component_refs(found[key]))
    return found


def _resolve_clashes(kept: Mapping[str, Mapping[ComponentKey, Any]]) -> dict[str, Renames]:
    """Per service, the components renamed `<service>__<Name>`: those whose content differs
    between services once their own references are renamed, repeated to a fixed point (a
    schema that points at a renamed one differs too)."""
    renames: dict[str, Renames] = {service: {} for service in kept}
    while True:
        variants: dict[ComponentKey, dict[str, str]] = {}
        for service, comps in kept.items():
            for key, value in comps.items():
                variants.setdefault(key, {})[service] = json.dumps(
                    rewrite_refs(value, renames[service]), sort_keys=True)
        changed = False
        for key, by_service in variants.items():
            if len(set(by_service.values())) > 1:
                for service in by_service:
                    if key not in renames[service]:
                        renames[service][key] = f"{service}__{key[1]}"
                        changed = True
        if not changed:
            return renames


def _operation(service: str, op: Mapping[str, Any], item: Mapping[str, Any],
               spec: Mapping[str, Any], route: RouteLike | None, renames: Renames) -> Json:
    """One operation as the gateway offers it: the service's tag first, the gateway's
    security, no `servers` (calls go to the gateway)."""
    out: Json = {key: rewrite_refs(value, renames) for key, value in op.items()
                 if key not in ("servers", "security")}
    own_tags = op.get("tags")
    out["tags"] = [service, *(tag for tag in (own_tags if isinstance(own_tags, list) else ())
                              if isinstance(tag, str) and tag != service)]
    public = route is None or route.public
    # A public route whose service still wants a token (the edge lets it through, the
    # service checks it) needs the token in the docs too, or "Try it out" cannot work.
    out["security"] = [] if public and not _needs_token(op, spec) else [{BEARER: []}]
    if route is not None and route.permissions:
        needed = ", ".join(f"`{p}`" for p in sorted(route.permissions))
        out["x-required-permissions"] = sorted(route.permissions)
        out["description"] = (str(op.get("description", "")) + "\n\n"
                               f"Needs the permissions {needed} (checked at the gateway)."
                               ).strip()
    return out


def _needs_token(op: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    requirements = op.get("security", spec.get("security", []))
    return isinstance(requirements, list) and bool(requirements) and all(requirements)


def _unique_operation_ids(operations: Sequence[tuple[str, Json]]) -> None:
    """Clashing operationIds become `<service>__<id>`; a clash left after that (one service
    reusing an id) gets a counter."""
    counts: dict[str, int] = {}
    for _, op in operations:
        if isinstance(op.get("operationId"), str):
            counts[op["operationId"]] = counts.get(op["operationId"], 0) + 1
    seen: set[str] = {op_id for op_id, n in counts.items() if n == 1}
    for service, op in operations:
        op_id = op.get("operationId")
        if not isinstance(op_id, str) or counts[op_id] == 1:
            continue
        candidate, n = f"{service}__{op_id}", 1
        while candidate in seen:
            n += 1
            candidate = f"{service}__{op_id}_{n}"
        seen.add(candidate)
        op["operationId"] = candidate


def _info(title: str, version: str, sources: Mapping[str, Mapping[str, Any]],
          unavailable: Iterable[str]) -> Json:
    services = {service: str(_mapping(spec.get("info")).get("version", ""))
                for service, spec in sources.items() if service != GATEWAY}
    info: Json = {"title": title, "version": version,
                  "description": "Every service behind the gateway, at the gateway's paths.",
                  "x-services": services}
    missing = sorted(set(unavailable))
    if missing:
        info["x-unavailable-services"] = missing
        info["description"] += (" Not available now, so not described: "
                                + ", ".join(missing) + ".")
    return info


def _tags(sources: Mapping[str, Mapping[str, Any]]) -> list[Json]:
    """A tag per service (described by its own info), then the services' own tags."""
    tags: dict[str, Json] = {}
    for service, spec in sources.items():
        info = _mapping(spec.get("info"))
        description = info.get("description") or info.get("title") or service
        tags[service] = {"name": service, "description": str(description)}
    for spec in sources.values():
        own_tags = spec.get("tags")
        for tag in own_tags if isinstance(own_tags, list) else ():
            if isinstance(tag, Mapping) and isinstance(tag.get("name"), str):
                tags.setdefault(tag["name"], dict(tag))
    return list(tags.values())

