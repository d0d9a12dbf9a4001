"""`devinfra.stack.Stack`, the launcher behind `make up` and the end-to-end tests, checked with
stand-in services (tests/e2e/procs/standin.py) on the test session's Kafka and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from devinfra.kafka import KafkaBroker
from devinfra.postgres import PostgresServer
from devinfra.process import wait_until
from devinfra.stack import JWT_AUDIENCE, JWT_ISSUER, Stack, StackError
from tests.e2e.procs.standins import standins
from tests.e2e.standin_support import alive, processes_mentioning, recording_console
from tests.helpers import unique

ROOT = Path(__file__).resolve().parents[2]


def _env(stack: Stack, name: str) -> dict[str, object]:
    response = httpx.get(stack.url(name) + "/env", timeout=5)
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


def test_services_start_in_order_wired_to_each_other_with_prefixed_logs(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    console, out = recording_console()
    specs = standins({"auth": {"STANDIN_READY_AFTER": "2"}})
    stack = Stack(specs, state_dir=tmp_path, base_port=0, kafka=kafka, prefix="t1_",
                  redis_url="redis://127.0.0.1:6390/0", console=console)
    with stack:
        envs = {spec.name: _env(stack, spec.name) for spec in specs}
        pids = [proc.process.pid for proc in stack.processes.values()]
        for name, env in envs.items():
            assert httpx.get(stack.url(name) + "/health/ready").status_code == 200
            assert env["SERVICE_NAME"] == name
            assert env["SERVICE_PORT"] == str(stack.ports[name])
            database = f"sqlite+aiosqlite:///{tmp_path}/t1_{name}.db"
            assert env["DATABASE_URL"] == (None if name == "gateway" else database)
            assert env["KAFKA_BOOTSTRAP_SERVERS"] == kafka.bootstrap_servers
            assert env["KAFKA_CONSUMER_GROUP"] == f"t1_{name}"
            assert (env["JWT_ISSUER"], env["JWT_AUDIENCE"]) == (JWT_ISSUER, JWT_AUDIENCE)
            assert env["REDIS_URL"] == "redis://127.0.0.1:6390/0"
            assert env["ENVIRONMENT"] == "development"
            assert env["REGISTRY_SIGNING_KEY_FILE"] == str(tmp_path / "registry.key")
            assert env["REGISTRY_ALLOWED_NETWORKS"] == "127.0.0.0/8,::1"
        registry_key = (tmp_path / "registry.key").read_text()
        assert len(registry_key.strip()) >= 32
        assert stat.S_IMODE((tmp_path / "registry.key").stat().st_mode) == 0o600
        assert envs["auth"]["JWT_KEYS_DIR"] == str(tmp_path / "keys")
        assert envs["auth"]["JWKS_URL"] is None
        for name in ("user", "driver", "notification", "order", "gateway"):
            assert envs[name]["JWKS_URL"] == stack.url("auth") + "/.well-known/jwks.json"
            assert envs[name]["JWT_KEYS_DIR"] is None
            # Launched only once auth answered ready (after 2 s of "not yet").
            assert envs[name]["started"] > envs["auth"]["first_ready"]  # type: ignore[operator]
        assert len(set(stack.ports.values())) == 6 and 8000 not in stack.ports.values()

        admin = stack.admin
        assert admin is not None and admin.created and admin.email == "admin@example.com"
        assert stat.S_IMODE((tmp_path / "admin.txt").stat().st_mode) == 0o600
        assert (tmp_path / "admin.txt").read_text() == \
            f"email: {admin.email}\npassword: {admin.password}\n"
        login = httpx.post(stack.url("auth") + "/auth/login",
                           json={"email": admin.email, "password": admin.password})
        assert login.status_code == 200
    text = out.getvalue()
    for name in envs:
        port = stack.ports[name]
        assert re.search(rf"^ *{name} │ standin {name} serving on port {port}$", text, re.M), text
        assert re.search(rf"^ *{name} │ standin {name} stopped cleanly$", text, re.M), text
    assert not [pid for pid in pids if pid is not None and alive(pid)]

    # A second run on the same state folder logs in with the kept admin: no new one. This one
    # runs with observability (as `make up OBS=1`): Prometheus scrapes each process.
    again = Stack(standins(only=("auth", "user")), state_dir=tmp_path, base_port=0,
                  kafka=kafka, prefix="t1_", console=recording_console()[0], observability=True)
    with again:
        assert again.admin is not None and not again.admin.created
        assert again.admin.password == admin.password
        assert (tmp_path / "registry.key").read_text() == registry_key  # kept, like the admin
        assert _env(again, "user")["REDIS_URL"] is None  # only when one is given
        prometheus = again.prometheus
        assert prometheus is not None and prometheus.port != 9090  # base_port=0: a free one
        assert json.loads(prometheus.targets_file.read_text()) == [
            {"targets": [f"127.0.0.1:{again.ports[name]}"], "labels": {"service": name}}
            for name in ("auth", "user")]
        wait_until(lambda: {target["labels"]["service"]: target["health"]
                            for target in prometheus.active_targets()}
                   == {"auth": "up", "user": "up"}, timeout=60, what="every process scraped",
                   interval=0.2)
        versions = {series["metric"]["service"]: series["metric"]["version"]
                    for series in prometheus.query("kfm_service_info")}
        assert versions == {"auth": "standin-auth", "user": "standin-user"}
    assert not prometheus.running


def test_a_service_that_exits_early_fails_the_start_with_its_last_lines(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    console, out = recording_console()
    stack = Stack(standins({"user": {"STANDIN_MODE": "exit"}}, only=("auth", "user")),
                  state_dir=tmp_path, base_port=0, kafka=kafka, console=console)
    with pytest.raises(StackError) as failure:
        stack.start()
    message = str(failure.value)
    assert "user exited with code 3 before it was ready" in message
    assert "cannot open the database: the disk is on fire" in message
    # What had started is stopped again, dependents first.
    assert all(not proc.running for proc in stack.processes.values())
    assert "auth │ standin auth stopped cleanly" in out.getvalue()


def test_a_service_that_never_gets_ready_times_out_with_the_reason(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    stack = Stack(standins({"driver": {"STANDIN_MODE": "never_ready"}},
                                    only=("auth", "driver")), state_dir=tmp_path,
                  base_port=0, kafka=kafka, console=recording_console()[0], ready_timeout=8)
    started = time.monotonic()
    with pytest.raises(StackError) as failure:
        stack.start()
    assert time.monotonic() - started < 30
    message = str(failure.value)
    assert "driver not ready after 8s" in message
    assert "503" in message and "the stand-in is not ready yet" in message
    assert all(not proc.running for proc in stack.processes.values())


def test_close_kills_a_service_that_ignores_sigterm_and_stops_dependents_first(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    console, out = recording_console()
    stack = Stack(standins({"notification": {"STANDIN_MODE": "stubborn"}},
                                    only=("auth", "user", "notification")), state_dir=tmp_path,
                  base_port=0, kafka=kafka, console=console, stop_timeout=1.5)
    stack.start()
    pids = {name: proc.process.pid for name, proc in stack.processes.items()}
    started = time.monotonic()
    stack.close()
    assert time.monotonic() - started < 15
    assert not [pid for pid in pids.values() if pid is not None and alive(pid)]
    text = out.getvalue()
    assert "notification │ standin notification stopped cleanly" not in text  # SIGKILLed
    assert "user │ standin user stopped cleanly" in text
    assert text.index("stopping notification") < text.index("stopping auth")


def test_watch_reports_a_service_that_dies_while_running(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    console, out = recording_console()
    with Stack(standins(only=("auth",)), state_dir=tmp_path, base_port=0, kafka=kafka,
               console=console, admin_email=None) as stack:
        assert stack.watch(duration=0.6) == 0  # nothing wrong: runs out its time
        stack.processes["auth"].kill()
        started = time.monotonic()
        assert stack.watch(duration=30) == 1
        assert time.monotonic() - started < 5
    assert "auth exited with code -9" in out.getvalue()


@pytest.mark.postgres
async def test_postgres_gives_each_service_its_own_database(
        kafka: KafkaBroker, postgres: PostgresServer, tmp_path: Path) -> None:
    prefix = unique("stk").replace("-", "_") + "_"
    stack = Stack(standins(), state_dir=tmp_path, base_port=0, kafka=kafka, db="postgres",
                  postgres=postgres, prefix=prefix, console=recording_console()[0])
    names = ["auth", "user", "driver", "notification"]
    with stack:
        envs = {name: _env(stack, name) for name in names}
    conn = await asyncpg.connect(postgres.dsn)
    try:
        existing = {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{prefix}{name}" WITH (FORCE)')
    finally:
        await conn.close()
    for name in names:
        assert f"{prefix}{name}" in existing
        assert envs[name]["database"] == f"{prefix}{name}"  # it connected to its own
        assert str(envs[name]["DATABASE_URL"]).endswith(f":{postgres.port}/{prefix}{name}")
    assert postgres.running  # a given server is left running


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_command_stops_everything_on_ctrl_c_or_sigterm(
        kafka: KafkaBroker, tmp_path: Path, signum: signal.Signals) -> None:
    """`python -m devinfra.stack` as `make up` runs it: the summary once all are ready, then a
    signal stops every process it started (none is left behind) and it exits 0. Under SIGTERM,
    as `make up OBS=1` runs it: with Prometheus."""
    observability = signum == signal.SIGTERM
    proc = subprocess.Popen(
        [sys.executable, "-m", "devinfra.stack", "--services", "tests.e2e.procs.standins:SERVICES",
         "--base-port", "0", "--kafka", kafka.bootstrap_servers, "--state-dir", str(tmp_path),
         *(["--observability"] if observability else [])],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        assert proc.poll() is None, "".join(lines)
        children = set(processes_mentioning(str(tmp_path))) - {proc.pid}
        # the five stand-ins and the gateway (the registry's key file is in the state dir),
        # and Prometheus (its config too)
        assert len(children) == 6 + observability, "".join(lines)
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    for name in ("auth", "user", "driver", "notification", "order"):
        assert re.search(rf"^ *{name} │ standin {name} stopped cleanly$", out, re.M), out
        assert re.search(rf"^{name} ready at http://127\.0\.0\.1:\d+ ", out, re.M), out
    assert "admin@example.com" in out and "curl -s -X POST" in out
    prometheus = re.search(r"^prometheus ready at (http://127\.0\.0\.1:\d+), scraping 6 ", out,
                           re.M)
    assert bool(prometheus) == observability, out
    if prometheus:
        assert re.search(rf"prometheus +│ {re.escape(prometheus.group(1))} ", out), out
    assert out.rstrip().endswith("stopped")
    assert processes_mentioning(str(tmp_path)) == []
