"""Whether a new JSON Schema of an event still reads every record written to the old one.

Compared structurally (`$ref`s resolved, so renaming a model changes nothing): a field the old
schema has and the new one lacks is *removed*; a field whose type (type, format, items,
unions, enums, nested objects) differs is *retyped*; a field the new schema requires and the
old did not (new, or optional before) is *required*: a record written without it no longer
decodes. A new optional field is none of these. Titles, descriptions, defaults and value
constraints are not compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Schema = dict[str, Any]
Kind = Literal["removed", "retyped", "required"]

_SHAPE_KEYS = ("type", "format", "items", "prefixItems", "anyOf", "oneOf", "allOf", "enum",
               "const", "additionalProperties", "properties", "required")


@dataclass(frozen=True, slots=True)
class Change:
    """One breaking change: what happened to which field (dotted path from the envelope)."""

    kind: Kind
    field: str
    detail: str

    def __str__(self) -> str:
        return f"field {self.field!r} {self.detail}"


def breaking_changes(old: Schema, new: Schema) -> list[Change]:
    """What in `new` breaks a consumer of `old` (both whole pydantic JSON Schemas)."""
    return _diff(_Doc(old), old, _Doc(new), new, "")


class _Doc:
    """One schema document, for resolving its local `$ref`s."""

    def __init__(self, root: Schema) -> None:
        self.defs: dict[str, Schema] = root.get("$defs", {})

    def resolve(self, schema: Schema, seen: frozenset[str] = frozenset()) -> Schema:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            return schema
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            return schema
        return self.resolve(self.defs.get(name, {}), seen | {name})

    def shape(self, schema: Any, seen: frozenset[str] = frozenset()) -> Any:
        """The schema reduced to what decides which values it accepts (refs inlined once;
        a recursive reference stays a marker)."""
        if isinstance(schema, list):
            return [self.shape(s, seen) for s in schema]
        if not isinstance(schema, dict):
            return schema
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.removeprefix("#/$defs/")
            if name in seen:
                return {"recursive": True}
            return self.shape(self.defs.get(name, {}), seen | {name})
        out: dict[str, Any] = {}
        for key in _SHAPE_KEYS:
            if key not in schema:
                continue
            value = schema[key]
            if key == "properties":
                out[key] = {k: self.shape(v, seen) for k, v in sorted(value.items())}
            elif key == "required":
                out[key] = sorted(value)
            elif key in ("anyOf", "oneOf"):
                out[key] = sorted((self.shape(v, seen) for v in value), key=json.dumps)
            else:
                out[key] = self.shape(value, seen)
        return out


def _describe(shape: Any) -> str:
    text = json.dumps(shape, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _diff(old_doc: _Doc, old: Schema, new_doc: _Doc, new: Schema, path: str) -> list[Change]:
    old, new = old_doc.resolve(old), new_doc.resolve(new)
    old_props, new_props = old.get("properties"), new.get("properties")
    if isinstance(old_props, dict) and isinstance(new_props, dict):
        changes: list[Change] = []
        for name, old_field in old_props.items():
            where = f"{path}{name}"
            if name not in new_props:
                changes.append(Change("removed", where, "was removed"))
            else:
                changes += _diff(old_doc, old_field, new_doc, new_props[name], where + ".")
        before = set(old.get("required", ()))
        for name in sorted(set(new.get("required", ())) - before):
            detail = ("became required" if name in old_props else "is new and required")
            changes.append(Change("required", f"{path}{name}", detail))
        return changes
    was, now = old_doc.shape(old), new_doc.shape(new)
    if was != now:
        return [Change("retyped", path.rstrip("."),
                       f"was retyped: {_describe(was)} -> {_describe(now)}")]
    return []
