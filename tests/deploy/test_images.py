"""The images built for real: scripts/images.sh builds user's and the gateway's (starting
Debian's dockerd and making the base image from Debian's packages when this machine has
neither yet) and waits until Docker reports a gateway container healthy. Then: both run as uid
10001, hold no uv, pip, compiler or extra CA certificate, only their own code; user's app
assembles, and its container becomes healthy against the tests' Kafka broker; a container
whose /health/live does not answer turns unhealthy.

An engine that cannot start or a failed build fails these tests with the script's reason,
never skips them (the last test shows it with a dockerd that dies at start). Cost (2 cores):
about 3 minutes the first time on a machine (debootstrap, then the locked dependencies), about
20 seconds once the base and dependency layers are cached (the smoke container's health check
is most of it)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devinfra.kafka import KafkaBroker
from devinfra.process import free_port

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("user", "gateway")
TAG = "test"
EXTRA_CA_DIR = Path(os.environ.get("EXTRA_CA_DIR", "/usr/local/share/ca-certificates"))


def docker(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout,
                          check=False)


def in_image(name: str, script: str, *options: str) -> str:
    result = docker("run", "--rm", "--network", "none", *options, "--entrypoint", "sh",
                    f"kfm/{name}:{TAG}", "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def built() -> Iterator[str]:
    argv = ["bash", "scripts/images.sh", "--tag", TAG]
    for name in NAMES:
        argv += ["--only", name]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"scripts/images.sh failed:\n{output}"
    yield output
    docker("rmi", *(f"kfm/{name}:{TAG}" for name in NAMES))


def test_the_lock_is_free_once_the_build_is_done(built: str) -> None:
    """Nothing the script leaves running (the engine it may start) holds its one-run-at-a-
    time lock: one that did kept every later `make images` waiting for ever."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kfm"
    with (cache / "images.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = [pid for pid in os.listdir("/proc") if pid.isdigit()
                       and _holds(pid, cache / "images.lock")]
            pytest.fail(f"images.lock is still held, by {holders}")
        fcntl.flock(lock, fcntl.LOCK_UN)


def _holds(pid: str, file: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(file)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_the_gateway_container_becomes_healthy(built: str) -> None:
    assert f"smoke: kfm/gateway:{TAG} healthy" in built, built


@pytest.mark.parametrize("name", NAMES)
def test_runs_as_non_root(built: str, name: str) -> None:
    assert in_image(name, "id -u").strip() == "10001"


@pytest.mark.parametrize("name", NAMES)
def test_holds_no_build_tools(built: str, name: str) -> None:
    found = in_image(name, "for t in uv pip pip3 gcc cc make; do command -v $t; done; "
                           "ls /opt; python -m pip --version 2>/dev/null; true")
    assert found == "", f"kfm/{name} holds {found!r}"


@pytest.mark.parametrize("name", NAMES)
def test_holds_no_extra_ca(built: str, name: str) -> None:
    assert in_image(name, "ls -A /usr/local/share/ca-certificates") == ""
    # The first line of each host CA's body: found nowhere in the image (not even appended to
    # the system bundle, as the build stage does).
    for crt in EXTRA_CA_DIR.glob("*.crt"):
        line = crt.read_text().splitlines()[1]
        result = docker("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "grep",
                        f"kfm/{name}:{TAG}", "-rlF", line, "/etc", "/usr", "/app", "/opt",
                        "/home", "/tmp", "/var")
        assert result.returncode == 1 and result.stdout == "", (crt, result.stdout)
        history = docker("history", "--no-trunc", f"kfm/{name}:{TAG}")
        assert history.returncode == 0 and line not in history.stdout, crt


def test_holds_only_its_own_code(built: str) -> None:
    listing = in_image("user", "ls /app; ls /app/services; find /app/core /app/services "
                               "-name tests -o -name '*.db'")
    assert listing.split() == ["core", "serve", "services", "__init__.py", "__pycache__",
                               "user"]
    assert in_image("gateway", "ls /app").split() == ["core", "gateway", "serve"]


def test_the_service_app_assembles(built: str) -> None:
    out = in_image("user", "python -c 'from services.user.main import create_app; "
                           "create_app(); print(\"assembled\")'", "-e", "JWKS_URL=http://x/j")
    assert out.strip().endswith("assembled")


def health(container: str, timeout: float) -> str:
    """Docker's health status once it leaves `starting` (or at the deadline)."""
    status = "starting"
    deadline = time.monotonic() + timeout
    while status == "starting" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip()
    return status


def test_a_service_container_with_kafka_becomes_healthy(built: str,
                                                        kafka: KafkaBroker) -> None:
    """user's image as a deployment runs it: the test broker (host network), its topics created
    at startup, its SQLite file in the /data volume, healthy by its own HEALTHCHECK."""
    port = free_port()
    container = f"kfm-user-{uuid.uuid4().hex[:8]}"
    started = docker("run", "-d", "--name", container, "--network", "host",
                     "-e", f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}",
                     "-e", f"SERVICE_PORT={port}", "-e", f"SERVICE_URL=http://127.0.0.1:{port}",
                     "-e", "JWKS_URL=http://127.0.0.1:9/.well-known/jwks.json",
                     f"kfm/user:{TAG}")
    assert started.returncode == 0, started.stderr
    try:
        status = health(container, 90)
        logs = docker("logs", "--tail", "20", container)
        assert status == "healthy", logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", "-v", container)


def test_a_dead_health_route_turns_unhealthy(built: str) -> None:
    """The image's own HEALTHCHECK (only its timing shortened) against a server that answers
    404 on /health/live: Docker must report it unhealthy."""
    container = f"kfm-unhealthy-{uuid.uuid4().hex[:8]}"
    started = docker("run", "-d", "--name", container, "--network", "none",
                     "--health-interval", "1s", "--health-retries", "2",
                     "--health-start-period", "1s", "--entrypoint", "python",
                     f"kfm/gateway:{TAG}", "-m", "http.server", "8000")
    assert started.returncode == 0, started.stderr
    try:
        assert health(container, 30) == "unhealthy"
    finally:
        docker("rm", "-f", "-v", container)


def test_an_engine_that_cannot_start_fails_the_build_with_its_reason(tmp_path: Path) -> None:
    """No engine answers and dockerd dies at start: the script fails showing dockerd's own
    words (these tests then fail with them), it never carries on or passes."""
    fakes = tmp_path / "bin"
    fakes.mkdir()
    (fakes / "docker").write_text("#!/bin/sh\nexit 1\n")
    (fakes / "dockerd").write_text("#!/bin/sh\necho 'failed to start daemon: no overlay2' >&2\n"
                                   "exit 1\n")
    for fake in fakes.iterdir():
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(["bash", "scripts/images.sh", "--only", "user"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: dockerd exited" in result.stderr
    assert "failed to start daemon: no overlay2" in result.stderr
