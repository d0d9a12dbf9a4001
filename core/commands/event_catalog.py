"""What each service publishes and handles, read from its modules without starting it.

A service is every `services/<name>/` with a `main.py`. Its *contracts* are the event classes
defined in `services/<name>/events.py` whose type starts with `<name>.`: the service owns
their schema (the other classes there are its copies of other services' events). What it
*handles* comes from the module-level `HandlerRegistry`s, `RequestResponder`s and `Projection`s
of its `events`, `handlers` and `projections` modules; its *upcasters* from the
`EventRegistry`s found there (also those on the registries above, and those a zero-argument
`-> EventRegistry` function of `events.py` returns).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from core.messaging import BaseEvent, EventRegistry, HandlerRegistry, RequestResponder
from core.projections import Projection

MODULES = ("events", "handlers", "projections")
EventKey = tuple[str, int]


@dataclass
class ServiceEvents:
    """One service's side of the event contracts."""

    name: str
    contracts: dict[EventKey, type[BaseEvent[Any]]] = field(default_factory=dict)
    handled: set[tuple[str, int | None]] = field(default_factory=set)
    """(type, version) handled; version None for a projection (it applies any version)."""
    registries: list[EventRegistry] = field(default_factory=list)

    def has_upcaster(self, event_type: str, from_version: int) -> bool:
        return any(r.has_upcaster(event_type, from_version) for r in self.registries)


def service_names(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (root / "services").glob("*/main.py"))


def collect(root: Path, package: str = "services") -> list[ServiceEvents]:
    """Every service under `root` (importable as `<package>.<name>`)."""
    return [from_modules(name, _modules(f"{package}.{name}")) for name in service_names(root)]


def _modules(package: str) -> list[ModuleType]:
    found = []
    for part in MODULES:
        name = f"{package}.{part}"
        if importlib.util.find_spec(name) is not None:
            found.append(importlib.import_module(name))
    return found


def from_modules(name: str, modules: list[ModuleType]) -> ServiceEvents:
    """Service `name`'s contracts (from its module named `*.events`), handled events and
    upcasters, from the module-level objects of `modules`."""
    service = ServiceEvents(name)
    for module in modules:
        for value in list(vars(module).values()):
            _add(service, module, value)
    return service


def _add(service: ServiceEvents, module: ModuleType, value: object) -> None:
    if (isinstance(value, type) and issubclass(value, BaseEvent)
            and value.__module__ == module.__name__ and module.__name__.endswith(".events")
            and value.EVENT_TYPE.split(".")[0] == service.name):
        service.contracts[(value.EVENT_TYPE, value.EVENT_VERSION)] = value
    elif isinstance(value, RequestResponder):
        _add(service, module, value.handlers)
    elif isinstance(value, HandlerRegistry):
        service.handled.update(value.handled())
        _add(service, module, value.events)
    elif isinstance(value, Projection):
        service.handled.update((t, None) for t in value.event_types)
        _add(service, module, value.events)
    elif isinstance(value, EventRegistry):
        if all(value is not r for r in service.registries):
            service.registries.append(value)
    elif (inspect.isfunction(value) and value.__module__ == module.__name__
          and module.__name__.endswith(".events") and _makes_registry(value)):
        _add(service, module, value())


def _makes_registry(fn: Any) -> bool:
    signature = inspect.signature(fn)
    return (not signature.parameters
            and signature.return_annotation in (EventRegistry, "EventRegistry"))
