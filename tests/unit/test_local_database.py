"""The default `DATABASE_URL`: one SQLite file per service under `.local/`, named after
`SERVICE_NAME`, derived once in core for every service; an explicit URL wins."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.commands import settings_errors
from core.config import Settings
from services.auth.config import AuthSettings
from services.driver.config import DriverSettings
from services.notification.config import NotificationSettings
from services.order.config import OrderSettings
from services.user.config import UserSettings


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SERVICE_NAME", raising=False)


def test_each_service_gets_its_own_file_named_after_it() -> None:
    urls = {cls().database_url for cls in (AuthSettings, UserSettings, DriverSettings,
                                            NotificationSettings, OrderSettings)}
    assert urls == {f"sqlite+aiosqlite:///./.local/{name}.db"
                    for name in ("auth", "user", "driver", "notification", "order")}


def test_the_name_comes_from_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_NAME", "orders")
    assert Settings(_env_file=None).database_url == "sqlite+aiosqlite:///./.local/orders.db"
    assert UserSettings(_env_file=None).database_url == "sqlite+aiosqlite:///./.local/orders.db"
    assert Settings(service_name="billing").database_url.endswith("/.local/billing.db")


def test_an_explicit_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@db/users")
    assert UserSettings(_env_file=None).database_url == "postgresql+asyncpg://u@db/users"


def test_production_refuses_the_local_default() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL must name a server database"):
        Settings(environment="production", kafka_topic_replication_factor=3,
                 registry_signing_key="k" * 32, _env_file=None)


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", "two words", "x" * 101])
def test_a_service_name_that_is_no_file_or_topic_name_is_refused(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("SERVICE_NAME", name)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert [e["loc"] for e in caught.value.errors()] == [("service_name",), ("database_url",)]
    assert settings_errors(caught.value).startswith("SERVICE_NAME: String should match")
    assert "DATABASE_URL" not in settings_errors(caught.value)


@pytest.mark.parametrize("name", ["orders", "orders-v2", "ride_saga", "Billing.EU", "x" * 100])
def test_topic_safe_service_names_are_accepted(monkeypatch: pytest.MonkeyPatch,
                                               name: str) -> None:
    monkeypatch.setenv("SERVICE_NAME", name)
    assert Settings(_env_file=None).database_url.endswith(f"/.local/{name}.db")
