"""What docker-compose.yml promises beyond its schema, as functions that return the broken
promises (empty: kept), so the tests can also feed them a broken file and see them object.

The generator (`python -m core create-service`) relies on these: it copies `user`'s entry with
the name replaced, adds the name to POSTGRES_DATABASES, and its template adds the service's
Prometheus target file."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
TARGETS = ROOT / "deploy" / "compose" / "prometheus" / "targets"
TEMPLATE_SERVICE = "user"
"""The entry the generator copies; every Python service's entry is it with the name changed."""
HOST_PATHS = frozenset({"/var/lib/docker/containers"})
"""Bind mounts of the Docker host itself (Filebeat reads the containers' logs)."""


def service_names() -> list[str]:
    """Every directory under services/ with a main.py, as the other deploy files derive it."""
    return sorted(path.parent.name for path in (ROOT / "services").glob("*/main.py"))


def renamed(text: str, name: str) -> str:
    return re.sub(rf"\b{TEMPLATE_SERVICE}\b", name, text)


def entry_text(compose_text: str, name: str) -> str:
    """The lines of service `name`'s entry as written (anchors unexpanded), or ''."""
    lines = compose_text.splitlines()
    try:
        start = lines.index(f"  {name}:")
    except ValueError:
        return ""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("   ")):
        end += 1
    return "\n".join(lines[start:end]).rstrip()


def non_uniform_text(compose_text: str, names: list[str]) -> list[str]:
    """The services whose written entry is not `user`'s with the name replaced."""
    template = entry_text(compose_text, TEMPLATE_SERVICE)
    if not template:
        return [TEMPLATE_SERVICE]
    return [name for name in names if entry_text(compose_text, name) != renamed(template, name)]


def non_uniform_config(config: Mapping[str, Any], names: list[str]) -> list[str]:
    """The same on the loaded config (anchors and merges expanded): what the engine runs."""
    services = config["services"]

    def dump(name: str) -> str:
        return json.dumps(services.get(name), sort_keys=True).replace(str(ROOT), "<root>")

    template = dump(TEMPLATE_SERVICE)
    return [name for name in names if dump(name) != renamed(template, name)]


def missing_gateway_dependencies(config: Mapping[str, Any], names: list[str]) -> list[str]:
    """The services the gateway does not wait for until they are healthy."""
    depends = config["services"]["gateway"].get("depends_on", {})
    return [name for name in names
            if depends.get(name, {}).get("condition") != "service_healthy"]


def database_mismatches(config: Mapping[str, Any], names: list[str]) -> list[str]:
    """Problems between POSTGRES_DATABASES, the services and their DATABASE_URLs."""
    listed = config["services"]["postgres"]["environment"]["POSTGRES_DATABASES"].split(",")
    problems = [f"POSTGRES_DATABASES lacks {name}" for name in names if name not in listed]
    for name in names:
        url = config["services"].get(name, {}).get("environment", {}).get("DATABASE_URL", "")
        if not re.fullmatch(rf"postgresql\+asyncpg://[^/]+@postgres/{name}", url):
            problems.append(f"{name}: DATABASE_URL {url!r} is not its own database")
    return problems


def missing_bind_sources(config: Mapping[str, Any]) -> list[str]:
    """Bind-mounted files and folders that the repository does not hold."""
    missing = []
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            source = volume.get("source", "")
            if volume.get("type") != "bind" or source in HOST_PATHS:
                continue
            path = Path(source)
            if not path.is_relative_to(ROOT) or not path.exists():
                missing.append(f"{name}: {source}")
    return missing


def env_example_names() -> list[str]:
    """The variables .env.example sets (commented-out ones are optional)."""
    return [line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
            if re.match(r"[A-Z_][A-Z0-9_]*=", line)]


def write_env_file(path: Path) -> Path:
    """.env.example with every variable given a value, as a developer's .env would be."""
    path.write_text("".join(f"{name}=Dev{index}value0123\n"
                            for index, name in enumerate(env_example_names())))
    return path


def compose(binary: Path, compose_file: Path, env_file: Path, *args: str,
            profile: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the Compose CLI on `compose_file` as if it sat at the repository root. The env
    file is given explicitly, so a developer's own .env never changes what is checked."""
    profiles = ["--profile", "observability"] if profile else []
    return subprocess.run(
        [str(binary), "-f", str(compose_file), "--project-directory", str(ROOT),
         "--env-file", str(env_file), *profiles, *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
