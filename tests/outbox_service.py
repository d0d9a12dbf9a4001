"""A tiny service schema for outbox and inbox tests: its own metadata, like a real service."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table

from core.db.engine import Database
from core.messaging.events import DomainEvent
from core.messaging.inbox import inbox_table
from core.messaging.outbox import lease_table, outbox_table
from core.messaging.serialization import EventRegistry

metadata = MetaData()
accounts = Table(
    "accounts", metadata,
    Column("id", String(64), primary_key=True),
    Column("balance", Integer, nullable=False),
)
effects = Table(  # one row per handler run: a double effect shows as two rows
    "effects", metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)
outbox_table(metadata)
lease_table(metadata)
inbox_table(metadata)


class Deposited(BaseModel):
    account_id: str
    amount: int
    seq: int


class MoneyDeposited(DomainEvent[Deposited]):
    EVENT_TYPE = "account.deposited"


def registry() -> EventRegistry:
    events = EventRegistry()
    events.register(MoneyDeposited)
    return events


def deposit(account_id: str, seq: int, amount: int = 10) -> MoneyDeposited:
    return MoneyDeposited(aggregate_id=account_id,
                          data=Deposited(account_id=account_id, amount=amount, seq=seq))


async def create_schema(url: str) -> Database:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return db
