"""The events two services both declare agree. Services share no code but core, so a service
that consumes another's events (or sends it commands) declares its own copy of each class:
this test finds every event type and version declared in more than one `services/*/events.py`
and checks that each copy can read what the other writes: a field one side requires, the
other side has, with the same schema. A copy may leave out a field the other side makes
optional, or fields it does not need to read (extra fields are ignored on decoding)."""

from __future__ import annotations

import importlib
import inspect
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from core.messaging import BaseEvent

SERVICES = sorted(p.parent.name for p in
                  (Path(__file__).resolve().parents[2] / "services").glob("*/events.py"))


def declared() -> dict[tuple[str, int], dict[str, type[BaseEvent[Any]]]]:
    """(event type, version) -> {service: its class}."""
    found: dict[tuple[str, int], dict[str, type[BaseEvent[Any]]]] = defaultdict(dict)
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.events")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, BaseEvent) and cls.__module__ == module.__name__
                    and getattr(cls, "EVENT_TYPE", "")):
                found[(cls.EVENT_TYPE, cls.EVENT_VERSION)][service] = cls
    return found


SHARED = {key: classes for key, classes in declared().items() if len(classes) > 1}


def inline(schema: Any, defs: dict[str, Any]) -> Any:
    """`schema` with every `$ref` replaced by what it names, titles dropped (a class name
    is no part of the wire format)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return inline(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: inline(v, defs) for k, v in schema.items()
                if k not in ("title", "$defs", "description")}
    if isinstance(schema, list):
        return [inline(item, defs) for item in schema]
    return schema


def data_schema(cls: type[BaseEvent[Any]]) -> dict[str, Any]:
    data = cls.model_fields["data"].annotation
    assert isinstance(data, type) and issubclass(data, BaseModel), cls
    schema = data.model_json_schema()
    resolved: dict[str, Any] = inline(schema, schema.get("$defs", {}))
    return resolved


def test_the_services_share_event_declarations() -> None:
    """The check below has something to check: the ride saga's commands and replies, the auth
    and user events other services consume."""
    assert {("driver.reserve", 1), ("driver.reserved", 1), ("auth.user_registered", 1),
            ("user.profile_updated", 1)} <= set(SHARED)


def unread(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """What `reader` requires that `writer` does not write as `reader` reads it (a default is
    the reader's own business)."""
    missing = []
    written = {k: {a: b for a, b in v.items() if a != "default"}
               for k, v in writer.get("properties", {}).items()}
    for field in reader.get("required", []):
        wanted = {a: b for a, b in reader["properties"][field].items() if a != "default"}
        if field not in written:
            missing.append(f"{field!r} is never written")
        elif written[field] != wanted:
            missing.append(f"{field!r} is read as {wanted}, written as {written[field]}")
    return missing


@pytest.mark.parametrize("key", sorted(SHARED), ids=lambda k: f"{k[0]}.v{k[1]}")
def test_every_copy_of_an_event_reads_what_its_writer_writes(key: tuple[str, int]) -> None:
    """One copy is the writer's (the service that publishes the event, or sends the command):
    every other copy reads it. Which one is not declared anywhere, so the test looks for a copy
    that all the others can read, and reports each copy's complaints if there is none."""
    copies = {service: data_schema(cls) for service, cls in SHARED[key].items()}
    complaints = {writer: {reader: unread(read, written)
                           for reader, read in copies.items() if reader != writer}
                  for writer, written in copies.items()}
    writers = [w for w, by in complaints.items() if not any(by.values())]
    assert writers, "no copy is readable by all the others:\n" + "\n".join(
        f"  if {w} writes: {r} finds {'; '.join(c)}"
        for w, by in complaints.items() for r, c in by.items() if c)
