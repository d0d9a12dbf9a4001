"""The generator end to end, in a clone of this repository: `create-service` makes a service
that passes its own tests and lint, that the clone's `make up` stack (its manifest, cut to
auth, the new service and the gateway) starts with the others on the session's Kafka, and
that answers through the gateway with the admin's token; then a second `create-service` of the
same name is refused.

Measured (2 cores, loaded): create-service 4-6 s, the service's tests, ruff and mypy 8-30 s
(run while the stack starts), the stack 18-34 s; the test 40-58 s."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devinfra.kafka import KafkaBroker
from tests.generator.repo import ROOT, clone, commit, core, python
from tests.helpers import eventually

NAME = "shop"
DEPLOY_CHECKS = ("tests/deploy/test_compose.py", "tests/deploy/test_helm.py",
                 "tests/deploy/test_observability_config.py")
pytestmark = pytest.mark.timeout(300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


async def test_a_generated_service_passes_its_tests_starts_and_answers_via_the_gateway(
        tmp_path: Path, kafka: KafkaBroker) -> None:
    repo = clone(tmp_path)
    share_venv(repo)
    started = time.monotonic()
    out = ok(core(repo, "create-service", NAME))
    print(f"create-service: {time.monotonic() - started:.1f}s")
    assert "port 8006" in out and "gateway/routes.toml" in out and "docker-compose.yml" in out
    for path in (f"services/{NAME}/main.py", f"services/{NAME}/migrations/env.py",
                 f"deploy/helm/values/{NAME}.yaml", f"services/.copier-answers.{NAME}.yml",
                 f"deploy/compose/prometheus/targets/{NAME}.json"):
        assert (repo / path).is_file(), path

    commit(repo, f"create-service {NAME}")

    started = time.monotonic()
    state = tmp_path / "state"
    log = tmp_path / "stack.log"
    stack = start_stack(repo, state, kafka.bootstrap_servers, log)
    try:
        # While the stack starts: the service's own checks, and the second create-service.
        refused, _ = await asyncio.gather(
            asyncio.to_thread(core, repo, "create-service", NAME),
            asyncio.to_thread(own_checks, repo, tmp_path))
        assert refused.returncode == 1 and "exists already" in refused.stderr, refused
        up = await eventually(lambda: asyncio.to_thread(_up, state, stack, log), timeout=90,
                              interval=0.2)
        print(f"stack up: {time.monotonic() - started:.1f}s")
        await _crud_through_the_gateway(f"http://127.0.0.1:{up['ports']['gateway']}",
                                        *up["admin"])
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            stack.kill()
            stack.wait()


def own_checks(repo: Path, tmp: Path) -> None:
    """The generated service's tests, ruff and mypy (strict), as generated."""
    started = time.monotonic()
    ok(python(repo, "-m", "pytest", f"services/{NAME}", "-q", "-p", "no:cacheprovider"))
    ok(python(repo, "-m", "ruff", "check", "-q", "--no-cache", f"services/{NAME}"))
    ok(python(repo, "-m", "mypy", "--cache-dir", str(mypy_cache(tmp)), f"services/{NAME}"))
    print(f"its tests, ruff and mypy: {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    # The deploy checks that read what the generator wrote, on the clone's Compose file, Helm
    # values and Prometheus targets: its entry is user's but for the name, its database, target
    # and release are there. Not the image builds (minutes on a cold machine; the Dockerfile
    # takes any service by `ARG SERVICE`) nor the workflows (the generator does not touch them).
    ok(python(repo, "-m", "pytest", *DEPLOY_CHECKS, "-q", "-p", "no:cacheprovider",
              timeout=180))
    print(f"tests/deploy in the clone: {time.monotonic() - started:.1f}s")


def share_venv(repo: Path) -> None:
    """The tools tests/deploy runs from `<root>/.venv/bin` (this interpreter's environment),
    kept out of git's view so the clone stays clean for the generator."""
    (repo / ".venv").symlink_to(Path(sys.executable).parents[1])
    with (repo / ".git/info/exclude").open("a") as exclude:
        exclude.write("/.venv\n")


def mypy_cache(tmp: Path) -> Path:
    """A copy of this checkout's mypy cache when there is one (`make lint` ran): the clone's
    core is the same, so only the new service is checked (1 s instead of 9)."""
    cache = tmp / "mypy_cache"
    if (ROOT / ".mypy_cache").is_dir():
        shutil.copytree(ROOT / ".mypy_cache", cache)
    return cache


def start_stack(repo: Path, state: Path, kafka: str, log: Path) -> subprocess.Popen[str]:
    """The clone's stack runner (its own devinfra, services.toml and routes.toml)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.generator.stack_runner", str(state), kafka, "auth", NAME,
         "gateway"],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, stdout=log.open("w"),
        stderr=subprocess.STDOUT, text=True)


def _up(state: Path, stack: subprocess.Popen[str], log: Path) -> dict[str, Any] | None:
    """What the stack wrote once ready; fails at once if it exited."""
    assert stack.poll() is None, f"stack exited {stack.returncode}:\n{log.read_text()[-5000:]}"
    file = state / "up.json"
    return json.loads(file.read_text()) if file.exists() else None


async def _crud_through_the_gateway(gateway: str, email: str, password: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as http:
        assert (await http.get(f"/api/{NAME}/items")).status_code == 401  # not public
        login = await http.post("/api/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

        async def created() -> httpx.Response | None:  # once the gateway has discovered it
            answer = await http.post(f"/api/{NAME}/items", headers=headers,
                                     json={"name": "first", "description": "generated"})
            return None if answer.status_code == 503 else answer

        answer = await eventually(created, timeout=30, interval=0.3)
        assert answer.status_code == 201, answer.text
        item = answer.json()["data"]
        assert item["name"] == "first" and item["processed_at"] is None

        async def processed() -> dict[str, Any] | None:  # its event, back through Kafka
            read = await http.get(f"/api/{NAME}/items/{item['id']}", headers=headers)
            assert read.status_code == 200, read.text
            data: dict[str, Any] = read.json()["data"]
            return data if data["processed_at"] else None

        assert (await eventually(processed, timeout=30, interval=0.3))["id"] == item["id"]
        listed = await http.get(f"/api/{NAME}/items", headers=headers)
        assert listed.status_code == 200 and listed.json()["meta"]["total"] == 1
        stats = await http.get(f"/api/{NAME}/stats", headers=headers)
        assert stats.status_code == 200 and stats.json()["data"] == {"items": 1}
        docs = await http.get("/openapi.json")  # the whole API's, merged by the gateway
        assert docs.status_code == 200 and f"/api/{NAME}/items/{{id}}" in docs.json()["paths"]
