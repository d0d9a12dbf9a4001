"""The one Dockerfile: `--build-arg SERVICE=<name>` builds any service or the gateway. The
step that keeps only that service's code and writes its command is run here as the image
build runs it (`/bin/sh -c`, in a copy of the tree): every service in under a second, where
tests/deploy/test_images.py builds two images for real."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = ("auth", "user", "driver", "notification", "order")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines()
        if not line.lstrip().startswith("#")))
    result = []
    for line in filter(None, (line.strip() for line in text.splitlines())):
        name, _, args = line.partition(" ")
        result.append((name.upper(), args.strip()))
    return result


def pruning_step() -> str:
    return next(args for name, args in instructions()
                if name == "RUN" and "module=" in args)


def build_tree(tmp: Path) -> Path:
    """What the image's /app holds before the step: core, services and gateway, as COPY'd."""
    app = tmp / "app"
    ignore = shutil.ignore_patterns("__pycache__", "*.db")
    for part in ("core", "services", "gateway"):
        shutil.copytree(ROOT / part, app / part, ignore=ignore)
    return app


def run_step(app: Path, service: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", pruning_step()], cwd=app, env={
        "SERVICE": service, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)


@pytest.mark.parametrize("service", [*SERVICES, "gateway"])
def test_each_image_holds_core_and_its_own_code_only(tmp_path: Path, service: str) -> None:
    app = build_tree(tmp_path)
    done = run_step(app, service)
    assert done.returncode == 0, done.stderr
    module = "gateway" if service == "gateway" else f"services.{service}"
    assert (app / "serve").read_text() == f'#!/bin/sh\nexec python -m {module} "$@"\n'
    assert (app / "serve").stat().st_mode & 0o111
    assert (app / module.replace(".", "/") / "__main__.py").is_file()
    assert (app / "core" / "app.py").is_file()
    kept = sorted(p.name for p in app.iterdir())
    if service == "gateway":
        assert kept == ["core", "gateway", "serve"]
    else:
        assert kept == ["core", "serve", "services"]
        assert sorted(p.name for p in (app / "services").iterdir()) == ["__init__.py", service]
    assert not list(app.rglob("tests")), "no tests in an image"


@pytest.mark.parametrize("service", ["", "billing", "../core", ".", "__init__.py"])
def test_an_unknown_service_fails_the_build_naming_the_known_ones(tmp_path: Path,
                                                                  service: str) -> None:
    app = build_tree(tmp_path)
    done = run_step(app, service)
    assert done.returncode == 1
    assert "must be one of: gateway" in done.stderr and "notification" in done.stderr
    assert not (app / "serve").exists()


def test_the_settings_the_image_sets_are_valid_and_per_service() -> None:
    env = " ".join(args for name, args in instructions() if name == "ENV")
    assert "DATABASE_URL=sqlite+aiosqlite:////data/${SERVICE}.db" in env
    assert "SERVICE_PORT=${PORT}" in env
    assert ("ARG", "SERVICE") in instructions()
    assert instructions()[-1] == ("CMD", '["/app/serve"]')


def test_no_other_dockerfile_is_left() -> None:
    found = [p.relative_to(ROOT) for part in ("core", "services", "gateway", "infra")
             for p in (ROOT / part).rglob("Dockerfile*")]
    assert found == [] and DOCKERFILE.is_file()
