"""The registry topic's records: one per instance, keyed by its id, the latest one wins.

A value is a JSON object carrying `v` (the schema version) and the instance; a null value (a
tombstone) removes the instance. Every heartbeat carries the whole instance, not a delta, so
one readable record is enough to know an instance, and a tombstone written by mistake (a reader
that thought the instance dead) heals with the next heartbeat.

Decoding never trusts the bytes: anything that is not a well-formed record of a known version
raises `RecordError`, which readers log and skip.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from core.service_registry.base import Instance, RegistryError

SCHEMA_VERSION = 1
"""Bumped only for a change old readers cannot read; fields may be added without a bump."""


class RecordError(RegistryError):
    """A registry record that cannot be read: malformed, or of a schema version not known."""


@dataclass(frozen=True, slots=True)
class Tombstone:
    """The instance `instance_id` left (a clean stop, or a reader found it long dead)."""

    instance_id: str


def encode(instance: Instance,
           seal: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bytes:
    """The record value announcing `instance`, sealed by `seal` (`trust.RecordTrust.seal`:
    signed) when given."""
    body: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "service": instance.service,
        "instance_id": instance.instance_id,
        "url": instance.url,
        "version": instance.version,
        "started_at": instance.started_at,
        "metadata": dict(instance.metadata),
    }
    return json.dumps(body if seal is None else seal(body), separators=(",", ":")).encode()


def decode(key: bytes | None, value: bytes | None) -> Instance | Tombstone:
    """The record's meaning: an announcement or a tombstone. Raises `RecordError`."""
    if not key:
        raise RecordError("record without a key")
    try:
        instance_id = key.decode()
    except UnicodeDecodeError:
        raise RecordError(f"key is not UTF-8: {key!r}") from None
    if value is None:
        return Tombstone(instance_id)
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"{instance_id}: value is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RecordError(f"{instance_id}: value is not a JSON object")
    version = body.get("v")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{instance_id}: schema version {version!r} is not known "
                          f"(this reader knows {SCHEMA_VERSION})")
    instance = Instance(
        service=_text(body, "service", instance_id),
        instance_id=_text(body, "instance_id", instance_id),
        url=_text(body, "url", instance_id),
        version=_text(body, "version", instance_id, required=False),
        started_at=_number(body, "started_at", instance_id),
        metadata=_metadata(body.get("metadata"), instance_id),
    )
    if instance.instance_id != instance_id:
        raise RecordError(f"{instance_id}: the value names instance {instance.instance_id!r}")
    return instance


def _text(body: dict[str, Any], name: str, where: str, *, required: bool = True) -> str:
    value = body.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value):
        kind = "a non-empty string" if required else "a string"
        raise RecordError(f"{where}: {name!r} must be {kind}, got {value!r}")
    return value


def _number(body: dict[str, Any], name: str, where: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"{where}: {name!r} must be a number, got {value!r}")
    return float(value)


def _metadata(value: object, where: str) -> MappingProxyType[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise RecordError(f"{where}: 'metadata' must map strings to strings")
    return MappingProxyType(dict(value))
