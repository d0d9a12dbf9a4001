"""Request bodies built from a service's own OpenAPI document, for the few inputs whose exact
field names the contract leaves open (a driver's licence and vehicle, the status values)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

Schema = dict[str, Any]


async def document(base_url: str) -> Schema:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get("/openapi.json")
    response.raise_for_status()
    doc: Schema = response.json()
    return doc


def _resolve(doc: Schema, schema: Schema) -> Schema:
    while "$ref" in schema:
        target: Any = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = target
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [_resolve(doc, s) for s in schema[key] if s.get("type") != "null"]
            return options[0]
    if "allOf" in schema:
        merged: Schema = {}
        for part in schema["allOf"]:
            merged = {**merged, **_resolve(doc, part)}
        return merged
    return schema


def body_schema(doc: Schema, path: str, method: str) -> Schema:
    operation = doc["paths"][path][method]
    return _resolve(doc, operation["requestBody"]["content"]["application/json"]["schema"])


def example(doc: Schema, schema: Schema, name: str = "") -> Any:
    """A valid-looking value for `schema`: its required fields, plausible strings by name."""
    schema = _resolve(doc, schema)
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = schema.get("type", "object")
    if kind == "object":
        props: dict[str, Schema] = schema.get("properties", {})
        return {key: example(doc, props[key], key) for key in schema.get("required", props)}
    if kind == "array":
        return [example(doc, schema.get("items", {}), name)] * max(1, schema.get("minItems", 0))
    if kind == "integer":
        return max(int(schema.get("minimum", 2020)), min(2020, int(schema.get("maximum", 2020))))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return _string(name, schema)


def _string(name: str, schema: Schema) -> str:
    lowered = name.lower()
    token = uuid.uuid4().hex[:8].upper()
    if "licen" in lowered:
        value = f"LIC{token}"
    elif "plate" in lowered or "registration" in lowered:
        value = f"E2E{token[:4]}"
    elif "email" in lowered or schema.get("format") == "email":
        value = f"e2e-{token.lower()}@example.com"
    elif "colo" in lowered:
        value = "blue"
    elif "model" in lowered:
        value = "Prius"
    elif "make" in lowered:
        value = "Toyota"
    elif "vehicle" in lowered:
        value = "Toyota Prius, blue"
    elif schema.get("format") == "uri":
        value = "https://example.com/e2e"
    else:
        value = f"e2e {token}"
    low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", 200))
    return value.ljust(low, "X")[:high]


def status_value(doc: Schema, online: bool) -> str:
    """The driver status meaning available (online) or offline, from the status schema's
    enum when it has one."""
    schema = body_schema(doc, _path_like(doc, "/status"), "put")
    enum = _resolve(doc, schema["properties"]["status"]).get("enum")
    wanted = ("available", "online", "active") if online else ("offline", "unavailable")
    for value in wanted:
        if enum is None or value in enum:
            return value
    raise AssertionError(f"no {'online' if online else 'offline'} status among {enum}")


def _path_like(doc: Schema, suffix: str) -> str:
    """The driver route ending in `suffix`, whatever its id parameter is called."""
    for path in doc["paths"]:
        if path.startswith("/drivers/{") and path.endswith(suffix):
            return str(path)
    raise AssertionError(f"no /drivers/{{id}}{suffix} route in {sorted(doc['paths'])}")
