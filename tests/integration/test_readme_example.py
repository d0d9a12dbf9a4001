"""The README's first handler and first service are code a newcomer copies: they must run.
Their blocks (each headed `# services/greeter/<file>.py`) are written out as a package, the
service's app is built, and the handler runs twice for one event on the in-memory bus over a
real SQLite inbox: one row, as the README promises."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from core.db import Database
from core.messaging import InMemoryEventBus
from core.messaging.inbox import DatabaseIdempotencyStore

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"```python\n# services/greeter/(\w+)\.py[^\n]*\n(.*?)```", re.S)
PACKAGE = "readme_greeter"


def blocks() -> dict[str, str]:
    found = {name: code for name, code in BLOCK.findall(README.read_text())}
    assert {"handlers", "models", "main"} <= set(found), sorted(found)
    return found


@pytest.fixture
def greeter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """The README's files as package `readme_greeter` (plus the `routers.py` it leaves out)."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "routers.py").write_text("from fastapi import APIRouter\n\nrouter = APIRouter()\n")
    for name, code in blocks().items():
        (package / f"{name}.py").write_text(code.replace("services.greeter", PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    modules = {name: importlib.import_module(f"{PACKAGE}.{name}")
               for name in ("models", "handlers", "main")}
    yield modules
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def test_the_first_service_builds(greeter: dict[str, Any]) -> None:
    app = greeter["main"].create_app()
    assert isinstance(app, FastAPI)
    tables = set(greeter["models"].Base.metadata.tables)
    assert {"welcomes", "outbox", "outbox_lease", "inbox"} <= tables


async def test_the_first_handler_writes_once_for_an_event_delivered_twice(
        greeter: dict[str, Any], tmp_path: Path) -> None:
    models, handlers = greeter["models"], greeter["handlers"]
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'greeter.db'}")
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(models.Base.metadata.create_all)
        bus = InMemoryEventBus(handlers.handlers.events,
                               idempotency=DatabaseIdempotencyStore(database,
                                                                    models.Base.metadata))
        bus.subscribe("auth.events", handlers.handlers)
        event = handlers.UserRegistered(
            data=handlers.UserRegisteredData(user_id="u1", email="ada@example.com"))
        await bus.publish("auth.events", event)
        await bus.publish("auth.events", event)  # redelivered: the inbox skips it
        async with database.session() as session:
            count = await session.scalar(select(func.count()).select_from(models.Welcome))
        assert count == 1
        assert bus.dead_letters.records == []
    finally:
        await database.dispose()
