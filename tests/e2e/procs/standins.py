"""The reference stack's shape with stand-ins in place of the services (same names, order and
roles), for `python -m devinfra.stack --services tests.e2e.procs.standins:SERVICES`."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from devinfra.stack import SERVICES as REAL
from devinfra.stack import ServiceSpec

MODULE = "tests.e2e.procs.standin"
CLI = "tests.e2e.procs.standin_cli"


def standins(env: Mapping[str, Mapping[str, str]] | None = None,
             only: Collection[str] | None = None) -> list[ServiceSpec]:
    """The real specs with the stand-in's module and CLI; `env` adds per-service variables;
    `only` keeps the services named (fewer processes: a shorter test)."""
    env = env or {}
    return [dataclasses.replace(spec, module=MODULE, admin_cli=CLI if spec.admin_cli else None,
                                env={**spec.env, **env.get(spec.name, {})})
            for spec in REAL if only is None or spec.name in only]


SERVICES = standins({"auth": {"STANDIN_READY_AFTER": "1"}})
