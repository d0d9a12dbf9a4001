"""Is a document valid AsyncAPI 3.0? Against the official JSON Schema (vendored: spec/), and
every `$ref` resolved: the schema checks a reference's shape, not that its target exists, so
a dangling `#/components/messages/gone` passes it.

`jsonschema` is a development dependency (check-jsonschema's): imported when a document is
validated (tests, CI, `events docs`), never by a running service.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema import Draft7Validator  # type: ignore[import-untyped]

SCHEMA_FILE = Path(__file__).parent / "spec" / "asyncapi-3.0.0.schema.json"


@functools.cache
def _validator() -> Draft7Validator:
    from jsonschema import Draft7Validator

    return Draft7Validator(json.loads(SCHEMA_FILE.read_text()))


def problems(document: Any) -> list[str]:
    """Every way `document` is not a valid AsyncAPI 3.0 document; empty when it is."""
    found = [f"{_path(e.absolute_path)}: {e.message[:300]}"
             for e in sorted(_validator().iter_errors(document), key=lambda e: e.path)]
    return found + dangling_refs(document)


def dangling_refs(document: Any) -> list[str]:
    """Each `$ref` that is not a `#/...` pointer to something in `document`."""
    out = []
    for where, ref in _refs(document, ()):
        if not ref.startswith("#/") and ref != "#":
            out.append(f"{_path(where)}: $ref {ref!r} is not a reference inside the document")
        elif not _resolves(document, ref):
            out.append(f"{_path(where)}: $ref {ref!r} resolves to nothing")
    return out


def _refs(node: Any, where: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield where, ref
        for key, value in node.items():
            yield from _refs(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, (*where, i))


def _resolves(document: Any, ref: str) -> bool:
    node = document
    for raw in ref.removeprefix("#").split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


def _path(parts: Any) -> str:
    return "/" + "/".join(str(p) for p in parts)
