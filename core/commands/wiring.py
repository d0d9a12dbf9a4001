"""Wire a new service into the files that list services: the `make up` manifest
(devinfra/stack/services.toml), the gateway's route table (gateway/routes.toml) and
docker-compose.yml. Each edit is a round trip (tomlkit, ruamel.yaml): comments and layout
survive, and a second call for the same name changes nothing."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tomlkit and ruamel.yaml are dev dependencies: imported when used
    import tomlkit
    from tomlkit.items import AoT

STACK_MANIFEST = Path("devinfra/stack/services.toml")
ROUTES = Path("gateway/routes.toml")
COMPOSE = Path("docker-compose.yml")
GATEWAY = "gateway"
TEMPLATE_SERVICE = "user"
"""Compose: the entry a new service's is copied from (they differ only by the name)."""
COLORS = ("bright_green", "bright_yellow", "bright_magenta", "bright_blue", "red", "white")
FIRST_PORT = 8001


class WiringError(Exception):
    """A file the generator edits is not in the shape it expects; the message says which."""


def _parse(file: Path) -> tomlkit.TOMLDocument:
    import tomlkit

    return tomlkit.parse(file.read_text())


def _services(doc: tomlkit.TOMLDocument, file: Path) -> AoT:
    from tomlkit.items import AoT

    rows = doc.get("services")
    if not isinstance(rows, AoT):
        raise WiringError(f"{file}: no [[services]] rows")
    return rows


def stack_names_and_ports(root: Path) -> dict[str, int]:
    doc = _parse(root / STACK_MANIFEST)
    return {str(row["name"]): int(row["port"]) for row in _services(doc, STACK_MANIFEST)}


def next_port(root: Path) -> int:
    """One above the highest port `make up` uses (8006 after the five reference services)."""
    return max([FIRST_PORT - 1, *stack_names_and_ports(root).values()]) + 1


def wire_stack(root: Path, name: str, port: int) -> bool:
    """Add `name`'s row before the gateway's (after auth, like the others), and make the
    gateway wait for it. False when it is there already."""
    import tomlkit

    file = root / STACK_MANIFEST
    doc = tomlkit.parse(file.read_text())
    rows = _services(doc, STACK_MANIFEST)
    names = [str(row["name"]) for row in rows]
    if name in names:
        return False
    row = tomlkit.table()
    row.add("name", name)
    row.add("port", port)
    row.add("color", COLORS[len(names) % len(COLORS)])
    issuers = [str(r["name"]) for r in rows if r.get("issuer")]
    if issuers:
        row.add("after", issuers)
    at = names.index(GATEWAY) if GATEWAY in names else len(names)
    row.add(tomlkit.nl())
    rows.insert(at, row)
    if GATEWAY in names:
        gateway = rows[at + 1]
        after = gateway.setdefault("after", tomlkit.array())
        after.append(name)
    file.write_text(tomlkit.dumps(doc))
    return True


def _routes(doc: tomlkit.TOMLDocument) -> AoT:
    from tomlkit.items import AoT

    rows = doc.get("routes")
    if not isinstance(rows, AoT):
        raise WiringError(f"{ROUTES}: no [[routes]] entries")
    return rows


def route_prefix(name: str) -> str:
    return f"/api/{name}"


def route_taken(root: Path, name: str) -> str | None:
    """Why `name`'s route would clash with the table's (same name or prefix), or None."""
    for route in _routes(_parse(root / ROUTES)):
        if route.get("name") == name or route.get("prefix") == route_prefix(name):
            return f"{ROUTES} already has a route named {name!r} or with prefix " \
                   f"{route_prefix(name)!r}"
    return None


def wire_routes(root: Path, name: str) -> bool:
    """Append `/api/<name>` → `/<name>` on service `name`: a valid token needed (not public),
    the service checks finer permissions itself. False when the route is there already."""
    import tomlkit

    file = root / ROUTES
    text = file.read_text()
    if any(route.get("name") == name for route in _routes(tomlkit.parse(text))):
        return False
    route = {"name": name, "prefix": route_prefix(name), "service": name,
             "rewrite": f"/{name}"}
    # Appended as text (rendered by tomlkit): the file's comments and layout stay as they are.
    text = (text.rstrip("\n") + f"\n\n# --- {name} (python -m core create-service {name}) "
            "---\n\n# Any valid token; the service checks the rest.\n"
            + tomlkit.dumps({"routes": [route]}))
    _routes(tomlkit.parse(text))  # still a route table
    file.write_text(text)
    return True


# --- docker-compose.yml ----------------------------------------------------------------------


def _yaml() -> Any:
    from ruamel.yaml import YAML  # only the compose wiring needs it

    yaml = YAML()  # round trip: comments, order and anchors survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _renamed(node: Any, old: str, new: str) -> Any:
    """A deep copy of `node` with `old` replaced by `new` wherever it stands as a word in a
    string (image, SERVICE build argument, database name, volume...)."""
    word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(old)}(?![A-Za-z0-9_])")
    node = copy.deepcopy(node)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return type(value)(word.sub(new, value)) if word.search(value) else value
        if isinstance(value, dict):
            for key in list(value):
                value[key] = walk(value[key])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = walk(item)
        return value

    return walk(node)


def _add_database(postgres: Any, name: str) -> None:
    env = postgres.get("environment") if isinstance(postgres, dict) else None
    if isinstance(env, dict) and "POSTGRES_DATABASES" in env:
        names = [n for n in str(env["POSTGRES_DATABASES"]).split(",") if n]
        if name not in names:
            env["POSTGRES_DATABASES"] = ",".join([*names, name])
        return
    if isinstance(env, list):
        for index, item in enumerate(env):
            key, sep, value = str(item).partition("=")
            if key == "POSTGRES_DATABASES" and sep:
                names = [n for n in value.split(",") if n]
                if name not in names:
                    env[index] = f"{key}={','.join([*names, name])}"
                return
    raise WiringError(f"{COMPOSE}: the postgres service has no POSTGRES_DATABASES entry")


def wire_compose(root: Path, name: str) -> bool:
    """Add `name`'s Compose service, a copy of `user`'s with the name replaced, before the
    gateway; the gateway depends on it; postgres creates its database. False (and a note)
    when there is no docker-compose.yml, or the service is in it already."""
    file = root / COMPOSE
    if not file.exists():
        print(f"note: no {COMPOSE}; skipped wiring {name} into Compose")
        return False
    yaml = _yaml()
    doc = yaml.load(file.read_text())
    found = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(found, dict) or TEMPLATE_SERVICE not in found:
        raise WiringError(f"{COMPOSE}: no services.{TEMPLATE_SERVICE} entry to copy")
    services: Any = found  # a ruamel CommentedMap: it has insert()
    if name in services:
        return False
    entry = _renamed(services[TEMPLATE_SERVICE], TEMPLATE_SERVICE, name)
    keys = list(services)
    services.insert(keys.index(GATEWAY) if GATEWAY in keys else len(keys), name, entry)
    if GATEWAY in services:
        _add_dependency(services[GATEWAY], name, services[GATEWAY].get("depends_on"))
    if "postgres" in services:
        _add_database(services["postgres"], name)
    _copy_volumes(doc, name)
    with file.open("w") as out:
        yaml.dump(doc, out)
    return True


def _add_dependency(gateway: Any, name: str, depends: Any) -> None:
    if isinstance(depends, dict):
        like = depends.get(TEMPLATE_SERVICE) or {"condition": "service_healthy"}
        depends[name] = copy.deepcopy(like)
    elif isinstance(depends, list):
        depends.append(name)
    else:
        gateway["depends_on"] = {name: {"condition": "service_healthy"}}


def _copy_volumes(doc: Any, name: str) -> None:
    """Named volumes of `user`'s (`user-data`) get a `<name>-data` twin."""
    volumes = doc.get("volumes")
    if not isinstance(volumes, dict):
        return
    word = re.compile(rf"(?<![A-Za-z0-9_]){TEMPLATE_SERVICE}(?![A-Za-z0-9_])")
    for key in list(volumes):
        if word.search(str(key)):
            twin = word.sub(name, str(key))
            if twin not in volumes:
                volumes[twin] = copy.deepcopy(volumes[key])
