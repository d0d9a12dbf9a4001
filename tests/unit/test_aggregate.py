"""The `Aggregate` base: typed dispatch of events to `@applies` methods, recording, versions,
snapshot JSON; and the guards of the repository and the store, without a database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import MetaData

from core.event_sourcing import (
    Aggregate,
    AggregateRepository,
    EventStore,
    UnhandledEventError,
    applies,
)
from core.messaging import EventSerializer, IntegrationEvent, OutboxWriter
from tests.event_sourced import (
    Account,
    AccountClosed,
    AccountOpened,
    InsufficientFundsError,
    MoneyDeposited,
    MoneyWithdrawn,
    OpenedData,
    deposited,
    metadata,
    registry,
    store,
)


def test_commands_record_events_that_move_the_state_at_once() -> None:
    account = Account.open("a1", "ann")
    account.deposit(30)
    account.withdraw(10)
    assert (account.owner, account.balance, account.movements) == ("ann", 20, [30, -10])
    assert account.version == 3
    assert [type(e) for e in account.pending] == [AccountOpened, MoneyDeposited,
                                                  MoneyWithdrawn]


def test_a_refused_command_records_nothing() -> None:
    account = Account.open("a1", "ann")
    with pytest.raises(InsufficientFundsError):
        account.withdraw(1)
    assert (account.balance, account.version, len(account.pending)) == (0, 1, 1)


def test_replaying_the_recorded_events_rebuilds_the_same_state() -> None:
    account = Account.open("a1", "ann")
    for amount in (5, 7):
        account.deposit(amount)
    rebuilt = Account(id="a1")
    for event in account.pending:
        rebuilt.apply(event)
    assert rebuilt.model_dump() == account.model_dump()
    assert rebuilt.pending == ()  # applied from the store: nothing new to save


def test_saved_events_are_no_longer_pending() -> None:
    account = Account.open("a1", "ann")
    account.mark_saved()
    account.deposit(1)
    assert len(account.pending) == 1 and account.version == 2


def test_an_event_without_an_applies_method_fails_loudly() -> None:
    account = Account(id="a1")
    with pytest.raises(UnhandledEventError,
                       match=r"^Account has no @applies method for AccountClosed$"):
        account.apply(AccountClosed(aggregate_id="a1", data=OpenedData(owner="x")))
    assert account.version == 0


def test_record_refuses_an_event_of_another_aggregate() -> None:
    account = Account(id="a1")
    with pytest.raises(ValueError, match=r"^MoneyDeposited names aggregate 'a2', not 'a1'$"):
        account.record(deposited("a2", 1))
    assert account.pending == () and account.balance == 0


class Ping(IntegrationEvent[OpenedData]):
    EVENT_TYPE = "test.ping"


def counters() -> tuple[type[Aggregate], type[Aggregate], type[Aggregate]]:
    """Aggregate classes made in the test that uses them (a class is set up as it is made)."""

    class Counter(Aggregate):
        pings: int = 0
        deposits: int = 0

        @applies(Ping)
        def _ping(self, event: Ping) -> None:
            self.pings += 1

        @applies(MoneyDeposited)
        def _deposited(self, event: MoneyDeposited) -> None:
            self.deposits += 1

    class LoudCounter(Counter):
        CATEGORY = "loud"

        @applies(Ping)
        def _ping_twice(self, event: Ping) -> None:
            self.pings += 2

    class QuietCounter(LoudCounter):
        pass

    return Counter, LoudCounter, QuietCounter


def test_dispatch_is_by_event_class_and_a_subclass_overrides_its_base() -> None:
    Counter, LoudCounter, _ = counters()
    ping = Ping(data=OpenedData(owner="x"))  # any BaseEvent, not only a DomainEvent
    base, loud = Counter(id="c"), LoudCounter(id="c")
    for aggregate in (base, loud):
        aggregate.record(ping)
        aggregate.record(deposited("c", 1))
    assert (base.pings, base.deposits) == (1, 1)  # type: ignore[attr-defined]
    # its own _ping, the inherited _deposited
    assert (loud.pings, loud.deposits) == (2, 1)  # type: ignore[attr-defined]


def test_the_category_defaults_to_the_class_name() -> None:
    Counter, LoudCounter, QuietCounter = counters()
    assert (Account.CATEGORY, Counter.CATEGORY, LoudCounter.CATEGORY,
            QuietCounter.CATEGORY) == ("account", "counter", "loud", "quietcounter")
    repository = AggregateRepository(store(), LoudCounter)
    assert repository.stream_id("42") == "loud-42"


def test_two_methods_applying_one_event_type_is_an_error_at_class_creation() -> None:
    with pytest.raises(TypeError, match="_one and _two both apply Ping"):
        class Twice(Aggregate):
            @applies(Ping)
            def _one(self, event: Ping) -> None:
                pass

            @applies(Ping)
            def _two(self, event: Ping) -> None:
                pass


def test_the_state_snapshots_as_json_without_its_pending_events() -> None:
    account = Account.open("a1", "ann")
    account.deposit(9)
    restored = Account.model_validate_json(account.model_dump_json())
    assert restored.model_dump() == account.model_dump() and restored.pending == ()


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="nope"):
        Account(id="a1", nope=1)  # type: ignore[call-arg]


def test_the_store_and_the_repository_refuse_bad_settings() -> None:
    serializer = EventSerializer(registry())
    refused = r"^an outbox needs a topic to write to, and a topic an outbox$"
    with pytest.raises(ValueError, match=refused):
        EventStore(MetaData(), serializer, topic="accounts")
    with pytest.raises(ValueError, match=refused):
        EventStore(MetaData(), serializer, outbox=OutboxWriter(MetaData(), serializer))
    with pytest.raises(ValueError, match="snapshot_every"):
        AggregateRepository(EventStore(metadata, serializer), Account, snapshot_every=0)


async def test_a_negative_expected_version_is_refused_before_any_write() -> None:
    session: Any = None  # never reached: the argument is checked first
    with pytest.raises(ValueError, match="expected_version"):
        await store().append(session, "account-1", [deposited("1", 1)], -1)
    assert await store().append(session, "account-1", [], 4) == 4  # nothing to append
