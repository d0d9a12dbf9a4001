"""The command line reads the settings of the environment it runs in, each time: run
in-process (tests, a tool embedding it), an earlier `get_settings()` must not answer for it
(a stale KAFKA_BOOTSTRAP_SERVERS sent a rebuild to a broker long gone)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.commands.failures import settings_database_url, settings_kafka
from core.config import get_settings


@pytest.fixture(autouse=True)
def cached_elsewhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process whose settings were read (and cached) before the command runs."""
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///./before.db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "before:9092")
    get_settings.cache_clear()
    get_settings()
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///./now.db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "now:9092")
    yield
    get_settings.cache_clear()


def test_the_database_url_is_the_one_set_now() -> None:
    assert settings_database_url() == "sqlite+aiosqlite:///./now.db"


def test_the_kafka_brokers_are_the_ones_set_now() -> None:
    """What the `dlq` and `projections` commands connect to."""
    assert settings_kafka().bootstrap_servers == "now:9092"
