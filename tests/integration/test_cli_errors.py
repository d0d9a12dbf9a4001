"""The command lines pointed at the wrong place, as an operator runs them (a real process,
settings from the environment): a database without the service's tables, a database that
does not answer, a URL that is not one, a broker that does not answer, a key directory that
cannot be written. Each is one `error:` line naming what to set, exit status 1, and never a
traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devinfra.process import free_port
from tests.integration.databases import DatabaseFactory

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "tests/sample_service"


async def run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", module, *args], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
        timeout=120, check=False)


def one_error_line(done: subprocess.CompletedProcess[str], *says: str) -> str:
    """The error line; fails unless it is the command's one complaint and says `says`."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 1, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    for text in says:
        assert text in errors[0], errors[0]
    return errors[0]


async def test_outbox_parked_on_another_services_database_says_what_to_set(
        databases: DatabaseFactory) -> None:
    """The issue's case: DATABASE_URL names a database without the service's tables."""
    url = await databases.new()
    done = await run("core", "outbox", "parked", SERVICE, DATABASE_URL=url)

    one_error_line(done, "does not hold the tables of tests/sample_service", "outbox",
                   "set DATABASE_URL (or --url)", f"python -m core migrate {SERVICE}")
    assert done.stderr.count("\n") == 1, done.stderr


UNREACHABLE = f"postgresql+asyncpg://ops:s3cret@127.0.0.1:{free_port()}/orders"


@pytest.mark.parametrize("command", [
    ["outbox", "parked", SERVICE], ["outbox", "discard", SERVICE, "--id", "1"],
    ["migrate", SERVICE], ["downgrade", SERVICE, "-r", "base"], ["showmigrations", SERVICE]])
async def test_a_database_that_does_not_answer_is_one_line(command: list[str]) -> None:
    done = await run("core", *command, DATABASE_URL=UNREACHABLE)

    line = one_error_line(done, "cannot use the database at", "check DATABASE_URL",
                          "ops:***@127.0.0.1")
    assert "s3cret" not in done.stderr + done.stdout, line


async def test_a_malformed_database_url_is_one_line() -> None:
    for command in (["outbox", "parked", SERVICE], ["migrate", SERVICE]):
        done = await run("core", *command, DATABASE_URL="orders-db:5432")
        one_error_line(done, "'orders-db:5432' is not a database URL", "set DATABASE_URL")


async def test_invalid_settings_are_one_line() -> None:
    done = await run("core", "outbox", "parked", SERVICE, DATABASE_URL="sqlite:///x.db",
                     ENVIRONMENT="staging")
    one_error_line(done, "invalid settings: ENVIRONMENT:")


async def test_dead_letters_with_kafka_away_is_one_line() -> None:
    done = await run("core", "dlq", "list", "auth.events",
                     KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    one_error_line(done, "could not read auth.events.dlq at Kafka 127.0.0.1:",
                   "check KAFKA_BOOTSTRAP_SERVERS")


async def test_the_auth_commands_say_what_to_set(tmp_path: Path) -> None:
    client = await run("services.auth.cli", "create-client", "billing", "-p", "users:read",
                       DATABASE_URL=UNREACHABLE, JWT_KEYS_DIR=str(tmp_path / "keys"))
    one_error_line(client, "cannot use the database at", "check DATABASE_URL")

    behind = await run("services.auth.cli", "create-admin", "--email", "a@example.com",
                       DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
                       ENVIRONMENT="test", JWT_KEYS_DIR=str(tmp_path / "keys"))
    one_error_line(behind, "the database is not at head",
                   "run `python -m core migrate ", "services/auth`")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    keys = await run("services.auth.cli", "rotate-keys", JWT_KEYS_DIR=str(blocker / "keys"))
    one_error_line(keys, f"cannot keep keys in {blocker / 'keys'}", "set JWT_KEYS_DIR")
