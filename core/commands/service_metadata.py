"""The SERVICE argument of the operator commands (`outbox`, `sagas`): the service's MetaData,
which must declare the tables the command works on."""

from __future__ import annotations

import importlib

import typer
from sqlalchemy import MetaData

from core.db import migrations
from core.db.models import table_key


def service_metadata(service: str, spec: str | None, *, table: str, what: str) -> MetaData:
    """SERVICE's MetaData, from `spec` ('module:Base.metadata'), else from
    `<package>.models:Base.metadata` of the service the migration commands find. A service not
    found, a spec that does not load, or a MetaData without `table` (`what` names it in the
    message) is a usage error on the parameter at fault."""
    try:
        found = migrations.locate(service)
    except migrations.MigrationError as exc:
        raise typer.BadParameter(str(exc), param_hint="SERVICE") from exc
    default = f"{found.package}.models" if found.package else "models"
    module_name, _, attribute = (spec or f"{default}:Base.metadata").partition(":")
    try:
        value: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise typer.BadParameter(f"cannot load {module_name}:{attribute}: {exc}",
                                 param_hint="--metadata") from exc
    if not isinstance(value, MetaData) or table_key(value, table) not in value.tables:
        raise typer.BadParameter(f"{module_name}:{attribute} is not a MetaData with {what}",
                                 param_hint="--metadata")
    return value
