"""The rules of `python -m core events check`, on data (no imports, no files): tests give them
real pydantic models.

A snapshot is what the last release published: per service, per event type, per version, the
event's JSON Schema (validation mode: `required` is what a record must carry to decode).

1. A version in the snapshot and in the code: the code's schema must read every record of the
   snapshot's (`core.messaging.compatibility`: no removed, retyped or newly required field).
2. A version in the snapshot gone from the code: a newer version must exist, with upcasters
   from the old version up to it (records of the old one are still in the topics).
3. A version in the code newer than the snapshot's newest for that type: a new contract; if it
   breaks the snapshot's newest, upcasters must lead from that one to it.
4. A new event type passes; so does an additive change (a new optional field).
5. Every event a service handles is a contract of some service, at the version handled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.commands.event_catalog import ServiceEvents
from core.messaging.compatibility import Schema, breaking_changes

Snapshot = dict[str, dict[str, dict[int, Schema]]]
"""service -> event type -> version -> schema."""


def schema_of(cls: type[Any]) -> Schema:
    schema: Schema = cls.model_json_schema(mode="validation")
    return schema


def current(services: list[ServiceEvents]) -> Snapshot:
    """The snapshot the code would write now."""
    out: Snapshot = {}
    for service in services:
        types = out.setdefault(service.name, {})
        for (event_type, version), cls in sorted(service.contracts.items()):
            types.setdefault(event_type, {})[version] = schema_of(cls)
    return out


def check(snapshot: Snapshot, services: list[ServiceEvents]) -> list[str]:
    """Every rule broken, one line each naming service, event type, version and field."""
    now = current(services)
    by_name = {s.name: s for s in services}
    problems: list[str] = []
    for name, types in sorted(snapshot.items()):
        service = by_name.get(name, ServiceEvents(name))
        for event_type, versions in sorted(types.items()):
            code = now.get(name, {}).get(event_type, {})
            for version, old in sorted(versions.items()):
                where = f"{name}: {event_type} v{version}"
                if version in code:
                    problems += [f"{where}: {c}" for c in breaking_changes(old, code[version])]
                    continue
                newer = [v for v in code if v > version]
                if not newer:
                    problems.append(f"{where}: was removed (no newer version replaces it)")
                    continue
                problems += _missing_upcasters(service, event_type, version, max(newer))
            released = max(versions)
            for version in sorted(v for v in code if v > released):
                changes = breaking_changes(versions[released], code[version])
                gaps = [v for v in range(released, version)
                        if not service.has_upcaster(event_type, v)]
                if changes and gaps:
                    problems += [f"{name}: {event_type} v{version}: {c}, breaking "
                                 f"v{released}, and there is no upcaster v{gaps[0]} -> "
                                 f"v{gaps[0] + 1}" for c in changes]
    return problems + orphans(services)


def _missing_upcasters(service: ServiceEvents, event_type: str, start: int,
                       end: int) -> list[str]:
    return [f"{service.name}: {event_type} v{v}: no upcaster v{v} -> v{v + 1}"
            for v in range(start, end) if not service.has_upcaster(event_type, v)]


def orphans(services: list[ServiceEvents]) -> list[str]:
    """Rule 5: events a service handles that no service publishes (at that version)."""
    published: dict[str, set[int]] = {}
    for service in services:
        for event_type, released in service.contracts:
            published.setdefault(event_type, set()).add(released)
    problems = []
    for service in services:
        for event_type, version in sorted(service.handled, key=lambda k: (k[0], k[1] or 0)):
            versions = published.get(event_type)
            if versions is None:
                problems.append(f"{service.name}: handles {event_type}, which no service "
                                "publishes (orphan)")
            elif version is not None and version not in versions:
                shown = ", ".join(f"v{v}" for v in sorted(versions))
                problems.append(f"{service.name}: handles {event_type} v{version}, which no "
                                f"service publishes (orphan; published: {shown})")
    return problems


# -- the snapshot on disk: contracts/events/<service>.json -----------------------------------

SNAPSHOT_DIR = Path("contracts/events")


def read_snapshot(directory: Path) -> Snapshot:
    out: Snapshot = {}
    for file in sorted(directory.glob("*.json")):
        doc = json.loads(file.read_text())
        out[file.stem] = {t: {int(v): s for v, s in versions.items()}
                          for t, versions in doc["events"].items()}
    return out


def write_snapshot(directory: Path, snapshot: Snapshot) -> list[Path]:
    """One file per service (a service with no contracts gets none); files of services that
    are gone are removed, so the snapshot is exactly what the code publishes."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, types in sorted(snapshot.items()):
        if not types:
            continue
        doc = {"service": name,
               "events": {t: {str(v): s for v, s in sorted(vs.items())}
                          for t, vs in sorted(types.items())}}
        file = directory / f"{name}.json"
        file.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        written.append(file)
    for stale in set(directory.glob("*.json")) - set(written):
        stale.unlink()
    return written
