"""Local `$ref`s to components in an OpenAPI document: finding them and renaming them.

A reference is `#/components/<kind>/<name>` with the name escaped as a JSON pointer segment
(`~0` for `~`, `~1` for `/`). Besides `$ref` values, a discriminator's `mapping` holds
references too. Anything else (external files, `#/paths/...`) is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

ComponentKey = tuple[str, str]
"""(kind, name): ("schemas", "HTTPValidationError")."""
Renames = dict[ComponentKey, str]
"""A component's new name, per (kind, old name)."""

PREFIX = "#/components/"


def parse_ref(ref: object) -> ComponentKey | None:
    """The component `ref` points at, or None when it is not a local component reference."""
    if not isinstance(ref, str) or not ref.startswith(PREFIX):
        return None
    parts = ref[len(PREFIX):].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], _unescape(parts[1])


def make_ref(key: ComponentKey) -> str:
    return f"{PREFIX}{key[0]}/{_escape(key[1])}"


def component_refs(value: object) -> Iterator[ComponentKey]:
    """Every component `value` references directly (not through the components it names)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "$ref" or (key == "mapping" and _is_discriminator(value)):
                found = [parse_ref(v) for v in (item.values() if isinstance(item, Mapping)
                                                else (item,))]
                yield from (k for k in found if k is not None)
            else:
                yield from component_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from component_refs(item)


def rewrite_refs(value: Any, renames: Mapping[ComponentKey, str]) -> Any:
    """A deep copy of `value` with references to renamed components pointing at the new
    names (a copy even with nothing to rename: the result never shares with the input)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "$ref":
                out[key] = _renamed(item, renames)
            elif key == "mapping" and _is_discriminator(value) and isinstance(item, Mapping):
                out[key] = {k: _renamed(v, renames) for k, v in item.items()}
            else:
                out[key] = rewrite_refs(item, renames)
        return out
    if isinstance(value, list):
        return [rewrite_refs(item, renames) for item in value]
    return value


def _renamed(ref: Any, renames: Mapping[ComponentKey, str]) -> Any:
    key = parse_ref(ref)
    if key is None or key not in renames:
        return ref
    return make_ref((key[0], renames[key]))


def _is_discriminator(value: Mapping[str, Any]) -> bool:
    # `mapping` means references only inside a discriminator object (it has propertyName);
    # a schema property that happens to be called "mapping" is left alone.
    return "propertyName" in value


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")
