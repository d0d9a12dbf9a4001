"""What lets several services share one process (`make up MODE=monolith`): each reads its own
settings from its own environment without touching the process's, and each one's log lines
name it, though the services log through one handler."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import pytest

from core import logs
from core.logs import formatters
from core.logs.formatters import identity_scope
from devinfra.stack.inprocess import app_factory, settings_class, settings_from
from gateway.config import GatewaySettings
from services.order.config import OrderSettings
from services.user.config import UserSettings


class Capture(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def process_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formatters, "_identity", {})


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, Capture]:
    logger = logging.getLogger("test.one_process")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Capture(formatter)
    logger.addHandler(handler)
    return logger, handler


async def test_each_scoped_task_and_its_children_log_as_their_own_service() -> None:
    log, out = capture(logs.JsonFormatter())
    logs.identify("monolith")

    async def service(name: str) -> None:
        identity_scope(name)
        logs.identify(name, f"{name}-1")  # what its lifespan does, process-wide elsewhere
        await asyncio.sleep(0)
        log.info("from %s", name)
        await asyncio.create_task(asyncio.to_thread(log.info, "child of %s", name))

    await asyncio.gather(service("auth"), service("user"))
    log.info("outside")
    got = [json.loads(line) for line in out.lines]
    by_message = {d["message"]: (d.get("service"), d.get("instance")) for d in got}
    assert by_message == {
        "from auth": ("auth", "auth-1"), "child of auth": ("auth", "auth-1"),
        "from user": ("user", "user-1"), "child of user": ("user", "user-1"),
        "outside": ("monolith", None)}


async def test_a_readable_line_says_whose_it_is_only_inside_a_scope() -> None:
    log, out = capture(logs.ConsoleFormatter(colour=False))

    async def scoped() -> None:
        identity_scope("driver")
        log.info("hello")

    await asyncio.create_task(scoped())
    log.info("plain")
    assert out.lines[0].startswith("      driver │ ") and out.lines[0].endswith("hello")
    assert "│" not in out.lines[1]


def test_each_service_reads_its_own_environment_and_leaves_the_process_one_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "shared:9092")
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///./process.db")
    before = dict(os.environ)
    user = settings_from(UserSettings, {"DATABASE_URL": "sqlite+aiosqlite:///./user.db",
                                        "KAFKA_CONSUMER_GROUP": "p_user",
                                        "JWT_ALGORITHMS": '["EdDSA"]',
                                        "PROFILE_CACHE_TTL": "12.5"})
    order = settings_from(OrderSettings, {"DATABASE_URL": "sqlite+aiosqlite:///./order.db"})
    assert dict(os.environ) == before
    assert isinstance(user, UserSettings) and isinstance(order, OrderSettings)
    assert (user.database_url, order.database_url) == ("sqlite+aiosqlite:///./user.db",
                                                       "sqlite+aiosqlite:///./order.db")
    assert user.kafka().consumer_group == "p_user"
    assert order.kafka().consumer_group == "order"
    assert user.kafka_bootstrap_servers == order.kafka_bootstrap_servers == "shared:9092"
    assert user.jwt_algorithms == ["EdDSA"]  # parsed as the environment is (JSON)
    assert user.profile_cache_ttl == 12.5
    with pytest.raises(ValueError, match="profile_cache_ttl"):
        settings_from(UserSettings, {"PROFILE_CACHE_TTL": "-1"})


def test_the_factory_and_its_settings_class_are_found_by_module() -> None:
    order = app_factory("services.order")
    assert order.__module__ == "services.order.main"
    assert settings_class(order) is OrderSettings
    gateway = app_factory("gateway")
    assert gateway.__module__ == "gateway.app"
    assert settings_class(gateway) is GatewaySettings
    with pytest.raises(ModuleNotFoundError, match="no_such_service"):
        app_factory("services.no_such_service")

    def no_settings(debug: bool = False) -> Any:
        return None

    with pytest.raises(TypeError, match="no settings= argument"):
        settings_class(no_settings)
