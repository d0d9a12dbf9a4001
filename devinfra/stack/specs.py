"""What the stack runs: the service specs, their ports and start order, the admin's login."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from devinfra.process import DevInfraError, free_ports

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = ROOT / ".local"
DEFAULT_ADMIN_EMAIL = "admin@example.com"
JWT_ISSUER = "auth"
JWT_AUDIENCE = "platform"
GATEWAY_PORT = 8000
"""The gateway's; `base_port` offsets every port from it."""

Database = Literal["sqlite", "postgres"]
Mode = Literal["processes", "monolith"]
"""A process per service (`make up`), or all of them in one (`make up MODE=monolith`)."""


class StackError(DevInfraError):
    """The stack could not start: the message names the process and shows its last lines."""


class StackInterruptedError(StackError):
    """`request_stop()` (Ctrl-C, SIGTERM) arrived while the stack was starting."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One process of the stack: `python -m <module>` on `port`, started once every service
    named in `after` is ready."""

    name: str
    module: str
    port: int
    color: str = "white"
    after: tuple[str, ...] = ()
    issuer: bool = False
    """The token issuer: gets `JWT_KEYS_DIR`; every other service gets its `JWKS_URL`."""
    database: bool = True
    admin_cli: str | None = None
    """A module with `create-admin --email E --password-stdin` (the issuer's CLI)."""
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/health/ready"
    docs_path: str = "/docs"


MANIFEST = Path(__file__).with_name("services.toml")
"""The services' rows (data, so `python -m core create-service` can add one)."""


def load_services(manifest: Path = MANIFEST) -> tuple[ServiceSpec, ...]:
    """The specs of `manifest`'s `[[services]]` rows, in its order; a bad row names itself."""
    rows = tomllib.loads(manifest.read_text()).get("services", [])
    specs = []
    for index, row in enumerate(rows):
        try:
            row = dict(row)
            row.setdefault("module", f"services.{row['name']}")
            row["after"] = tuple(row.get("after", ()))
            specs.append(ServiceSpec(**row))
        except (KeyError, TypeError) as exc:
            raise StackError(f"{manifest}: services row {index + 1} ({row.get('name')!r}) "
                             f"is wrong: {exc}") from exc
    return tuple(specs)


SERVICES: tuple[ServiceSpec, ...] = load_services()


@dataclass(frozen=True, slots=True)
class AdminLogin:
    """The admin user `make up` made (or found in `file` from an earlier run)."""

    email: str
    password: str
    created: bool
    file: Path

    def curl(self, login_url: str) -> str:
        """A command that logs the admin in at `login_url` (the gateway's, or auth's own)."""
        body = f'{{"email": "{self.email}", "password": "{self.password}"}}'
        return (f"curl -s -X POST {login_url} "
                f"-H 'content-type: application/json' -d '{body}'")


def port_map(services: Sequence[ServiceSpec], ports: Mapping[str, int] | None,
           base_port: int | None) -> dict[str, int]:
    if base_port == 0:
        result = dict(zip([s.name for s in services], free_ports(len(services)), strict=True))
    elif base_port is not None:
        result = {s.name: base_port + s.port - GATEWAY_PORT for s in services}
    else:
        result = {s.name: s.port for s in services}
    result.update(ports or {})
    if len(set(result.values())) != len(result):
        raise StackError(f"two services on one port: {result}")
    return result


def start_order(services: Sequence[ServiceSpec]) -> list[list[ServiceSpec]]:
    """Groups to start one after another: each waits only for services of earlier groups."""
    known = {s.name for s in services}
    done: set[str] = set()
    remaining = list(services)
    waves: list[list[ServiceSpec]] = []
    while remaining:
        wave = [s for s in remaining if set(s.after) & known <= done]
        if not wave:
            raise StackError(f"services wait for each other: {[s.name for s in remaining]}")
        waves.append(wave)
        done |= {s.name for s in wave}
        remaining = [s for s in remaining if s not in wave]
    return waves


def read_admin(file: Path) -> AdminLogin | None:
    try:
        fields = dict(line.split(": ", 1) for line in file.read_text().splitlines()
                      if ": " in line)
        return AdminLogin(fields["email"], fields["password"], created=False, file=file)
    except (OSError, KeyError):
        return None


def write_admin(admin: AdminLogin) -> None:
    admin.file.unlink(missing_ok=True)
    fd = os.open(admin.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"email: {admin.email}\npassword: {admin.password}\n")
