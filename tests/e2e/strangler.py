"""The parts of the strangler-fig run (tests/e2e/test_strangler.py, docs/migrating.md): the
legacy shop as its own process, the catalog's code put into the generated service, processes
run in a copy of the repository (the generator tests' `clone`), and one probe per path of the
shop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devinfra.process import free_port
from tests.generator.repo import python
from tests.helpers import answers_ok, eventually
from tests.processes import ROOT

OVERLAY = ROOT / "examples" / "legacy_shop" / "catalog_service"
"""The catalog's code, copied over the generated service (the guide's step 2)."""

SHOP_ID = "legacy-shop"  # the shop's X-Served-By


@dataclass(frozen=True)
class Probe:
    """One request to one path of the shop: `template` as its OpenAPI names it."""

    method: str
    template: str
    path: str
    body: dict[str, Any] | None = None


def probes(tag: str) -> list[Probe]:
    """Every operation of the shop, with ids from its seed and bodies unique to `tag` (a
    probe may run twice: each run writes new rows)."""
    return [
        Probe("GET", "/catalog/products", "/catalog/products"),
        Probe("GET", "/catalog/products/{product_id}", "/catalog/products/2"),
        Probe("POST", "/catalog/products", "/catalog/products",
              {"sku": f"NEW-{tag}", "name": f"New {tag}", "price_cents": 990}),
        Probe("PUT", "/catalog/products/{product_id}", "/catalog/products/3",
              {"sku": "MUG-001", "name": "Stoneware mug", "price_cents": 1250}),
        Probe("GET", "/customers", "/customers"),
        Probe("GET", "/customers/{customer_id}", "/customers/1"),
        Probe("POST", "/customers", "/customers",
              {"email": f"{tag}@example.com", "name": tag}),
        Probe("GET", "/orders", "/orders"),
        Probe("GET", "/orders/{order_id}", "/orders/1"),
        Probe("POST", "/orders", "/orders",
              {"customer_id": 2, "lines": [{"product_id": 1, "quantity": 3}]}),
        Probe("GET", "/health", "/health"),
    ]


def operations(openapi: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in openapi["paths"].items()
            for method in item}


class Processes:
    """Processes started from any directory (a repository copy), stopped by `close()`."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], *, cwd: Path, env: dict[str, str],
              log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONPATH": str(cwd), **env})
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def start_shop(procs: Processes, workdir: Path) -> str:
    """`python -m examples.legacy_shop` on a free port over its own SQLite file; its URL."""
    port = free_port()
    log = workdir / "shop.log"
    proc = procs.start([sys.executable, "-m", "examples.legacy_shop", "--port", str(port),
                        "--database", str(workdir / "shop.db")], cwd=ROOT, env={}, log=log)
    url = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        assert proc.poll() is None, f"the shop exited:\n{log.read_text()}"
        return await answers_ok(f"{url}/health")

    await eventually(up, timeout=30, interval=0.1, what="the shop answering")
    return url


def run(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`python ARGS` to its end in a repository copy (`tests.generator.repo.clone`); its
    output, or a failure that shows it."""
    done = python(repo, *args, env=env)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fill_in(service_dir: Path) -> None:
    """The guide's step 2: the catalog's code over the generated service. The template's
    example resource goes (its files would import names the catalog does not have)."""
    for name in ("handlers.py", "deps.py"):
        (service_dir / name).unlink(missing_ok=True)
    shutil.rmtree(service_dir / "tests", ignore_errors=True)
    for source in OVERLAY.glob("*.py"):
        if source.name != "__init__.py":
            text = source.read_text().replace(HERE_ONLY, "")
            (service_dir / source.name).write_text(text)


HERE_ONLY = ("\n# Imports sorted as in services/catalog/, where this file runs (there it is "
             "first-party).\n# ruff: noqa: I001\n")
"""The overlay's lines for its place under examples/ (where `services.catalog` does not
exist, so ruff would sort its imports as third-party); dropped in the service."""
