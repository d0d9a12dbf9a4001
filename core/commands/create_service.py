"""`python -m core create-service NAME` and `update-service NAME`: the service generator.

The template is copier's (`copier.yml` at the repository root, the files under `template/`):
a service in the shape of the reference ones (services/README.md), its Helm values and its
answers file, `services/.copier-answers.NAME.yml`, which `update-service` reads to bring the
service up to the current template with a three-way merge (your edits are kept). Copier reads
the template from the repository's last commit (`vcs_ref=HEAD`), so both commands refuse a
dirty working tree: what they change is then exactly what `git diff` shows.
"""

from __future__ import annotations

import contextlib
import keyword
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from core.commands import wiring

NAME = re.compile(r"^[a-z][a-z0-9]{1,29}$")
RESERVED = frozenset({
    "gateway", "core", "tests", "services", "template", "devinfra", "deploy", "examples",
    "scripts", "docs", "bench", "infra", "mutation", "legacy", "api", "health", "metrics",
    "static", "kafka", "postgres", "redis", "prometheus", "grafana", "jaeger",
})
"""Names already meaning something here: packages, the gateway's `legacy` upstream, the
infrastructure's Compose services, paths every service serves."""
CONFLICT_MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)

app = typer.Typer()


class GeneratorError(Exception):
    """Why the generator refuses; the message is for the person who typed the command."""


def answers_file(name: str) -> str:
    return f"services/.copier-answers.{name}.yml"


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise GeneratorError(f"{name!r} is not a service name: lower-case letters and digits, a "
                             "letter first, 2 to 30 characters (no '-' or '_': it is a Python "
                             "package, a database and a topic prefix)")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise GeneratorError(f"{name!r} is a Python keyword: services.{name} could not be "
                             "imported")
    if name in RESERVED:
        raise GeneratorError(f"{name!r} is reserved (it names a part of this repository or "
                             "of the system); choose another name")


def check_clean(root: Path) -> None:
    """Refuse outside a git repository, or with uncommitted changes or untracked files."""
    result = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise GeneratorError(f"{root} is not a git repository (copier reads the template from "
                             f"its last commit): {result.stderr.strip()}")
    if result.stdout.strip():
        raise GeneratorError(
            f"the working tree of {root} has uncommitted changes; commit or stash them first, "
            f"so the generator's changes are yours to review alone:\n{result.stdout.rstrip()}")


def check_new(root: Path, name: str) -> None:
    if (root / "services" / name).exists():
        raise GeneratorError(f"services/{name} exists already; `python -m core update-service "
                             f"{name}` brings a generated service up to the template")
    if name in wiring.stack_names_and_ports(root):
        raise GeneratorError(f"{name!r} is in {wiring.STACK_MANIFEST} already")
    if name in wiring.compose_names(root):
        raise GeneratorError(f"{name!r} is a service or volume in {wiring.COMPOSE} already; "
                             "choose another name")
    clash = wiring.route_taken(root, name)
    if clash:
        raise GeneratorError(clash)
    for path in (root / f"deploy/helm/values/{name}.yaml", root / answers_file(name)):
        if path.exists():
            raise GeneratorError(f"{path.relative_to(root)} exists already")


@contextlib.contextmanager
def _quiet_copier() -> Iterator[None]:
    """Copier warns that the template is the repository it writes into (a dirty one, once it
    has written); that is how this generator works."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="copier")
        yield


def create(root: Path, name: str, port: int | None = None) -> list[str]:
    """Generate `services/<name>` and wire it in; returns what was done, line by line."""
    root = root.resolve()
    check_name(name)
    check_clean(root)
    check_new(root, name)
    port = port or wiring.next_port(root)
    used = {p: n for n, p in wiring.stack_names_and_ports(root).items()}
    if port in used:
        raise GeneratorError(f"port {port} is {used[port]}'s; choose another with --port")
    import copier  # only these commands need it

    try:
        with _quiet_copier(), contextlib.chdir(root):  # "." recorded as the template's path
            copier.run_copy(".", ".", data={"name": name, "port": port},
                            answers_file=answers_file(name), vcs_ref="HEAD", defaults=True,
                            unsafe=True, quiet=True)
        done = [f"services/{name}/ (port {port}), deploy/helm/values/{name}.yaml, "
                f"{answers_file(name)}"]
        if wiring.wire_stack(root, name, port):
            done.append(f"{wiring.STACK_MANIFEST}: `make up` runs it")
        if wiring.wire_routes(root, name):
            done.append(f"{wiring.ROUTES}: /api/{name} -> /{name}")
        if wiring.wire_compose(root, name):
            done.append(f"{wiring.COMPOSE}: its service, the gateway's depends_on, its database")
    except BaseException:
        _undo(root)
        raise
    return done


def _undo(root: Path) -> None:
    """Put the tree back as it was: it was clean (check_clean), so every change and every
    untracked file is the generator's. No service half-written, half-wired."""
    subprocess.run(["git", "checkout", "--", "."], cwd=root, capture_output=True, check=False)
    subprocess.run(["git", "clean", "-fdq", "--", "."], cwd=root, capture_output=True,
                   check=False)


def update(root: Path, name: str) -> list[str]:
    """Bring `services/<name>` up to the committed template (a three-way merge); returns the
    files it changed. Conflicts are refused by name (copier itself exits 0 with markers)."""
    root = root.resolve()
    check_name(name)
    if not (root / answers_file(name)).exists():
        raise GeneratorError(f"{answers_file(name)} not found: {name!r} was not made by "
                             "create-service (or its answers file was removed)")
    check_clean(root)
    if _template_unchanged(root, name):
        return []
    import copier

    with _quiet_copier(), contextlib.chdir(root):
        copier.run_update(".", answers_file=answers_file(name), vcs_ref="HEAD", defaults=True,
                          unsafe=True, quiet=True, overwrite=True, skip_answered=True,
                          conflict="inline")
    changed = _changed_files(root)
    conflicted = [path for path in changed if (root / path).is_file()
                  and CONFLICT_MARKER.search((root / path).read_text(errors="replace"))]
    if conflicted:
        raise GeneratorError(
            "the update conflicts with local changes; resolve the conflict markers in:\n  "
            + "\n  ".join(conflicted)
            + "\nthen commit (or `git reset --hard` to give up: the tree was clean)")
    return changed


_COMMIT = re.compile(r"""^_commit: *['"]?([^'"\s]+)""", re.MULTILINE)
"""The answers' `_commit`, quoted or not: YAML quotes a short hash of digits only ('7701518'),
which a pattern of non-spaces read with its quotes, a revision git does not know."""


def _template_unchanged(root: Path, name: str) -> bool:
    """Whether the template is as it was when the service was last generated or updated
    (its answers' `_commit`): then there is nothing to merge, and nothing is touched."""
    found = _COMMIT.search((root / answers_file(name)).read_text())
    if found is None:
        return False
    result = subprocess.run(["git", "diff", "--quiet", found.group(1), "HEAD", "--", "template",
                             "copier.yml"], cwd=root, capture_output=True, check=False)
    return result.returncode == 0


def _changed_files(root: Path) -> list[str]:
    result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=root, capture_output=True, text=True, check=True)
    return [line[3:].split(" -> ")[-1] for line in result.stdout.splitlines()]


Root = Annotated[Path, typer.Option("--root", help="The repository (default: here).")]


@app.command("create-service")
def create_service(
    name: Annotated[str, typer.Argument(
        help="The new service's name: lower-case letters and digits, a letter first.")],
    port: Annotated[int | None, typer.Option(
        "--port", min=1, max=65535, help="Its `make up` port (default: the next free one).")
    ] = None,
    root: Root = Path("."),
) -> None:
    """Generate services/NAME from the template and wire it into `make up`, the gateway's
    routes, Compose and Helm."""
    try:
        done = create(root, name, port)
    except (GeneratorError, wiring.WiringError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"created {name}:\n  " + "\n  ".join(done))
    typer.echo(f"next: python -m pytest services/{name}; git add -A && git commit; make up")


@app.command("update-service")
def update_service(
    name: Annotated[str, typer.Argument(help="A service made by create-service.")],
    root: Root = Path("."),
) -> None:
    """Bring services/NAME up to the current (committed) template, keeping local edits."""
    try:
        changed = update(root, name)
    except (GeneratorError, wiring.WiringError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"updated {name}: " + ", ".join(changed) if changed
               else f"{name} is up to date: the template has not changed since")
