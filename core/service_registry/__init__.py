"""Service registry: announce this instance, discover the others (see `base`).

`registry_from_settings`, `record_trust` and `kafka_registry` are loaded on first use:
they read `core.config`, which itself validates its registry settings with this package's
leaf modules, so importing them eagerly here would make the two packages import each other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from core.service_registry.base import Change, Instance, RegistryError, ServiceRegistry
from core.service_registry.records import encode
from core.service_registry.trust import RecordTrust

if TYPE_CHECKING:
    from core.service_registry.factory import record_trust, registry_from_settings
    from core.service_registry.kafka import kafka_registry

_LAZY = {
    "record_trust": "core.service_registry.factory",
    "registry_from_settings": "core.service_registry.factory",
    "kafka_registry": "core.service_registry.kafka",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Change",
    "Instance",
    "RecordTrust",
    "RegistryError",
    "ServiceRegistry",
    "encode",
    "kafka_registry",
    "record_trust",
    "registry_from_settings",
]
