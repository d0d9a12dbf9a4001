"""Running Helm and kubernetes-validate over deploy/helm/ for the tests: which chart each values
file deploys, and the rendered manifests as dicts.

Helm comes from `devinfra.tools.ensure("helm")` (built once per machine from the Go module
proxy); kubernetes-validate from the dev dependencies, with its schemas shipped offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from devinfra.tools import ensure

ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = ROOT / "deploy" / "helm"
VALUES_DIR = HELM_DIR / "values"
ROUTES_FILE = ROOT / "gateway" / "routes.toml"
NAMESPACE = "rides"
KUBE_VERSIONS = ("1.28.0", "1.37.0")
"""The oldest Kubernetes the charts support (their Chart.yaml) and the newest whose schemas
kubernetes-validate ships: the manifests must be valid for both."""

Manifest = dict[str, Any]


def services() -> list[str]:
    """Every service: a directory under services/ with a main.py (derived, never listed)."""
    return sorted(path.parent.name for path in (ROOT / "services").glob("*/main.py"))


@dataclass(frozen=True)
class Release:
    """One `helm upgrade --install`: a chart with its values file (and what the deploy command
    adds to it, like the gateway's route table)."""

    name: str
    chart: str
    values: Path
    extra: tuple[str, ...] = ()

    def args(self) -> list[str]:
        return [str(HELM_DIR / self.chart), "-f", str(self.values), *self.extra]


def releases() -> list[Release]:
    found = [Release(name, "service", VALUES_DIR / f"{name}.yaml") for name in services()]
    found.append(Release("gateway", "gateway", VALUES_DIR / "gateway.yaml",
                         ("--set-file", f"routes={ROUTES_FILE}")))
    found.append(Release("kafka", "kafka", VALUES_DIR / "kafka.yaml"))
    return found


@cache
def helm() -> str:
    return str(ensure("helm", quiet=True))


def kubernetes_validate() -> str:
    found = Path(sys.executable).with_name("kubernetes-validate")
    path = str(found) if found.exists() else shutil.which("kubernetes-validate")
    assert path, "kubernetes-validate not found: `uv sync` installs it (dev dependencies)"
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def lint(release: Release, *more: str) -> subprocess.CompletedProcess[str]:
    return run(helm(), "lint", "--strict", *release.args(), *more)


def template(release: Release, *more: str,
             kube_version: str = KUBE_VERSIONS[0]) -> subprocess.CompletedProcess[str]:
    return run(helm(), "template", release.name, *release.args(), "--namespace", NAMESPACE,
               "--kube-version", kube_version, *more)


def validate(kube_version: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate in strict mode: an unknown field is an error (options before the
    file names)."""
    return run(kubernetes_validate(), "-k", kube_version, "--strict", "--quiet",
               *map(str, paths))


@cache
def rendered(release: Release) -> tuple[Manifest, ...]:
    done = template(release)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def one(manifests: tuple[Manifest, ...], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
