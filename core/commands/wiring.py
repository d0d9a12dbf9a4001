"""Wire a new service into the files that list services: the `make up` manifest
(devinfra/stack/services.toml), the gateway's route table (gateway/routes.toml) and
docker-compose.yml. Each edit is a round trip (tomlkit, ruamel.yaml): comments and layout
survive, and a second call for the same name changes nothing."""

from __future__ import annotations

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
#
# Compose entries are copied as TEXT, located by ruamel.yaml's parse (the line of each key):
# a dump would re-flow the file's hand-wrapped lists and expand its `<<: *anchor` merges into
# the copy. The result is parsed again and checked to be the user entry with the new name.


def _word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")


def _load(text: str) -> Any:
    from ruamel.yaml import YAML  # a dev dependency, like tomlkit

    return YAML().load(text)


def _block(lines: list[str], mapping: Any, key: str) -> tuple[int, int]:
    """The lines [start, end) of `key`'s entry in `mapping`: its key line and every line
    indented deeper (trailing blank and comment lines left to whatever follows)."""
    start, column = _lc(mapping).key(key)
    end = start + 1
    while end < len(lines) and (not lines[end].strip()
                                or len(lines[end]) - len(lines[end].lstrip()) > column):
        end += 1
    while end > start + 1 and (not lines[end - 1].strip()
                               or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return start, end


def _lc(node: Any) -> Any:
    """ruamel.yaml's position record of a parsed mapping or list (0-based lines, columns)."""
    return node.lc


def _renamed(lines: list[str], old: str, new: str) -> list[str]:
    word = _word(old)
    return [word.sub(new, line) for line in lines]


def compose_names(root: Path) -> set[str]:
    """The Compose services and volumes defined already (none without a docker-compose.yml):
    a new service named like one (kibana, filebeat, ...) could not get its entry."""
    file = root / COMPOSE
    if not file.exists():
        return set()
    doc: Any = _load(file.read_text())
    if not isinstance(doc, dict):
        return set()
    return {str(key) for section in ("services", "volumes")
            if isinstance(doc.get(section), dict) for key in doc[section]}


def wire_compose(root: Path, name: str) -> bool:
    """Add `name`'s Compose service, a copy of `user`'s with the name replaced, before the
    gateway; the gateway depends on it; postgres creates its database; a `user-data` volume
    gets its twin. False (and a note) when there is no docker-compose.yml, or the service is
    in it already."""
    file = root / COMPOSE
    if not file.exists():
        print(f"note: no {COMPOSE}; skipped wiring {name} into Compose")
        return False
    text = file.read_text()
    doc: Any = _load(text)
    services: Any = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict) or TEMPLATE_SERVICE not in services:
        raise WiringError(f"{COMPOSE}: no services.{TEMPLATE_SERVICE} entry to copy")
    if name in services:
        return False
    lines = text.splitlines()
    edits: list[tuple[int, list[str]]] = []  # (insert before line, lines)
    start, end = _block(lines, services, TEMPLATE_SERVICE)
    entry = ["", *_renamed(lines[start:end], TEMPLATE_SERVICE, name)]
    if GATEWAY in services:
        at = _lc(services).key(GATEWAY)[0]
        while at > 0 and lines[at - 1].lstrip().startswith("#"):  # the gateway's comment
            at -= 1
        edits.append((at, [*entry[1:], ""]))
        edits.append(_gateway_dependency(lines, services[GATEWAY], name))
    else:
        edits.append((end, entry))
    volumes: Any = doc.get("volumes")
    if isinstance(volumes, dict):
        for key in [k for k in volumes if _word(TEMPLATE_SERVICE).search(str(k))]:
            twin = _word(TEMPLATE_SERVICE).sub(name, str(key))
            if twin not in volumes:
                v_start, v_end = _block(lines, volumes, key)
                edits.append((v_end, _renamed(lines[v_start:v_end], TEMPLATE_SERVICE, name)))
    _add_database(lines, services.get("postgres"), name)  # in place: no line moves
    for at, added in sorted(edits, key=lambda edit: edit[0], reverse=True):
        lines[at:at] = added
    result = "\n".join(lines) + "\n"
    _check(text, result, name)
    file.write_text(result)
    return True


def _gateway_dependency(lines: list[str], gateway: Any, name: str) -> tuple[int, list[str]]:
    depends: Any = gateway.get("depends_on") if isinstance(gateway, dict) else None
    if isinstance(depends, dict) and TEMPLATE_SERVICE in depends:
        start, end = _block(lines, depends, TEMPLATE_SERVICE)
        return end, _renamed(lines[start:end], TEMPLATE_SERVICE, name)
    if isinstance(depends, list) and TEMPLATE_SERVICE in depends:
        at = _lc(depends).item(depends.index(TEMPLATE_SERVICE))[0]
        return at + 1, _renamed(lines[at:at + 1], TEMPLATE_SERVICE, name)
    raise WiringError(f"{COMPOSE}: the gateway's depends_on does not list {TEMPLATE_SERVICE}")


def _add_database(lines: list[str], postgres: Any, name: str) -> None:
    """Append `name` to postgres's POSTGRES_DATABASES line (mapping or list form)."""
    env: Any = postgres.get("environment") if isinstance(postgres, dict) else None
    if postgres is None:
        return
    if isinstance(env, dict) and "POSTGRES_DATABASES" in env:
        at = _lc(env).key("POSTGRES_DATABASES")[0]
    elif isinstance(env, list) and any(str(i).startswith("POSTGRES_DATABASES=") for i in env):
        at = _lc(env).item([str(i).startswith("POSTGRES_DATABASES=") for i in env].index(True))[0]
    else:
        raise WiringError(f"{COMPOSE}: the postgres service has no POSTGRES_DATABASES entry")
    listed = re.search(r"POSTGRES_DATABASES[=:]\s*[\"']?([A-Za-z0-9_,-]+)", lines[at])
    if listed is None:
        raise WiringError(f"{COMPOSE}: cannot read the line {lines[at].strip()!r}")
    if name not in listed.group(1).split(","):
        lines[at] = lines[at][:listed.end(1)] + "," + name + lines[at][listed.end(1):]


def _check(before: str, after: str, name: str) -> None:
    """The edited file parses, its new entry is user's with the name replaced, and user's
    entry is as it was."""
    old, new = _load(before)["services"], _load(after)["services"]
    expected = _load(_word(TEMPLATE_SERVICE).sub(name, before))["services"][name]
    if _plain(new[name]) != _plain(expected) or \
            _plain(new[TEMPLATE_SERVICE]) != _plain(old[TEMPLATE_SERVICE]):
        raise WiringError(f"{COMPOSE}: the copy of {TEMPLATE_SERVICE}'s entry came out wrong")


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node
