"""`create_service` checks what it can before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import MetaData

from core.app import Subscription, create_service
from core.bases import ConfigurationError
from core.messaging.inbox import inbox_table
from core.messaging.outbox import lease_table, outbox_table


async def noop(event: object) -> None: ...


def test_a_service_without_outbox_tables_is_refused_at_build_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="outbox, outbox_lease"):
        create_service("bare", metadata=MetaData(), service_dir=tmp_path)


def test_a_subscribing_service_needs_an_inbox(tmp_path: Path) -> None:
    metadata = MetaData()
    outbox_table(metadata)
    lease_table(metadata)
    create_service("publisher", metadata=metadata, service_dir=tmp_path)  # publishing only: fine
    with pytest.raises(ConfigurationError, match="inbox"):
        create_service("consumer", metadata=metadata, service_dir=tmp_path,
                       subscriptions=[Subscription("orders", noop)])
    inbox_table(metadata)
    app = create_service("consumer", metadata=metadata, service_dir=tmp_path,
                         subscriptions=[Subscription("orders", noop)])
    assert app.title == "consumer"
