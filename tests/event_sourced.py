"""A tiny event-sourced service for the event store's tests: its own metadata (events,
snapshots, outbox), an `Account` aggregate with a rule to keep, and its events."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import MetaData

from core.db import Database
from core.event_sourcing import Aggregate, EventStore, applies, event_store_tables
from core.messaging import (
    DomainEvent,
    EventRegistry,
    EventSerializer,
    OutboxWriter,
    messaging_tables,
)

metadata = MetaData()
event_store_tables(metadata)
messaging_tables(metadata, inbox=False)


class OpenedData(BaseModel):
    owner: str


class AmountData(BaseModel):
    amount: int


class AccountOpened(DomainEvent[OpenedData]):
    EVENT_TYPE = "account.opened"


class MoneyDeposited(DomainEvent[AmountData]):
    EVENT_TYPE = "account.deposited"


class MoneyWithdrawn(DomainEvent[AmountData]):
    EVENT_TYPE = "account.withdrawn"


class AccountClosed(DomainEvent[OpenedData]):
    EVENT_TYPE = "account.closed"


class InsufficientFundsError(Exception):
    """A withdrawal larger than the balance."""


class Account(Aggregate):
    owner: str = ""
    balance: int = 0
    movements: list[int] = []
    closed: bool = False

    @classmethod
    def open(cls, account_id: str, owner: str) -> Account:
        account = cls(id=account_id)
        account.record(AccountOpened(aggregate_id=account_id, data=OpenedData(owner=owner)))
        return account

    def deposit(self, amount: int) -> None:
        self.record(MoneyDeposited(aggregate_id=self.id, data=AmountData(amount=amount)))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFundsError(f"{amount} > {self.balance}")
        self.record(MoneyWithdrawn(aggregate_id=self.id, data=AmountData(amount=amount)))

    @applies(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.owner = event.data.owner

    @applies(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.data.amount
        self.movements.append(event.data.amount)

    @applies(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.data.amount
        self.movements.append(-event.data.amount)


def registry() -> EventRegistry:
    events = EventRegistry()
    for cls in (AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed):
        events.register(cls)
    return events


def deposited(account_id: str, amount: int) -> MoneyDeposited:
    return MoneyDeposited(aggregate_id=account_id, data=AmountData(amount=amount))


def store(events: EventRegistry | None = None, *, topic: str | None = "accounts",
          service_name: str = "ledger") -> EventStore:
    """An event store on `metadata`; with a `topic`, its events go through the outbox too."""
    serializer = EventSerializer(events or registry(), service_name=service_name)
    if topic is None:
        return EventStore(metadata, serializer)
    return EventStore(metadata, serializer, outbox=OutboxWriter(metadata, serializer),
                      topic=topic)


async def create_schema(url: str) -> Database:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return db
