"""`LogRegistry`'s unhappy paths, on the in-memory log (the same engine runs the Kafka backend;
the contract suite runs both): the log away at start, during heartbeats and reads, at
deregistration; a reader that cannot catch up; refusals."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.service_registry import Instance, RegistryError
from core.service_registry.following import LogRegistry
from core.service_registry.log import LogRecord
from core.service_registry.memory import MemoryHub, MemoryLog, memory_registry
from tests.helpers import eventually

FAST = {"ttl": 1.0, "heartbeat_interval": 0.1, "grace": 30.0}
ME = Instance(service="user", instance_id="user-1", url="http://h:1", started_at=0.0)


async def test_the_log_away_at_start_is_a_clear_error() -> None:
    hub = MemoryHub()
    hub.available = False
    registry = memory_registry(hub, **FAST)
    with pytest.raises(RegistryError, match="unavailable"):
        await registry.start()
    with pytest.raises(RegistryError, match="start the registry before registering"):
        await registry.register(ME)
    with pytest.raises(RegistryError, match="not started"):
        await registry.check()
    await registry.stop()
    await registry.abandon()


async def test_heartbeats_that_fail_are_logged_once_retried_and_resume(
        caplog: pytest.LogCaptureFixture) -> None:
    hub = MemoryHub()
    mine, other = memory_registry(hub, **FAST), memory_registry(hub, **FAST)
    await mine.start()
    await other.start()
    await mine.register(ME)
    await eventually(lambda: other.discover("user"), timeout=5)
    caplog.set_level(logging.INFO, "core.service_registry")
    hub.available = False
    await asyncio.sleep(FAST["ttl"] * 1.5)  # heartbeats fail, for longer than the TTL
    failed = [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    with pytest.raises(RegistryError, match="cannot read"):
        await other.check()
    # Nobody can hear anyone: that says nothing about the instances, so they are kept.
    assert await other.discover("user") == [ME] and await mine.discover("user") == [ME]
    hub.available = True
    await eventually(lambda: any("heartbeats resumed" in r.getMessage()
                                 for r in caplog.records), timeout=5)
    assert await eventually(lambda: other.discover("user"), timeout=5) == [ME]
    await eventually(_checks(other), timeout=5)
    assert [r for r in caplog.records if "reading the log again" in r.getMessage()]
    await mine.stop()
    await other.stop()


def _checks(registry: LogRegistry):  # type: ignore[no-untyped-def]
    async def ok() -> bool:
        try:
            await registry.check()
        except RegistryError:
            return False
        return True
    return ok


async def test_the_log_away_at_deregistration_leaves_it_to_the_ttl(
        caplog: pytest.LogCaptureFixture) -> None:
    hub = MemoryHub()
    registry = memory_registry(hub, **FAST)
    await registry.start()
    await registry.register(ME)
    hub.available = False
    await registry.stop()
    assert "ages out within 1s" in caplog.text
    assert await registry.discover("user") == []
    assert [r.value for r in hub.records] == [hub.records[0].value]  # no tombstone got through


async def test_a_tombstone_that_cannot_be_written_is_tried_again() -> None:
    hub = MemoryHub()
    timing = {"ttl": 0.3, "heartbeat_interval": 0.05, "grace": 0.6}
    crashed, reader = memory_registry(hub, **timing), memory_registry(hub, **timing)
    await crashed.start()
    await reader.start()
    await crashed.register(ME)
    await crashed.abandon()
    hub.available = False
    await asyncio.sleep(1.0)
    assert len(reader.table) == 1  # due, but the log is away
    hub.available = True
    await eventually(lambda: any(r.value is None for r in hub.records), timeout=5)
    assert len(reader.table) == 0
    await reader.stop()


class NeverCaughtUp(MemoryLog):
    @property
    def caught_up(self) -> bool:
        return False


async def test_a_reader_that_cannot_catch_up_starts_but_is_not_ready(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = LogRegistry(NeverCaughtUp(MemoryHub()), catch_up_timeout=0.1, **FAST)
    await registry.start()
    assert "not caught up with the log after 0.1s" in caplog.text
    with pytest.raises(RegistryError, match="not caught up"):
        await registry.check()
    await registry.stop()


async def test_the_reader_stopping_is_not_ready() -> None:
    registry = memory_registry(MemoryHub(), **FAST)
    await registry.start()
    registry._tasks["reader"].cancel()
    await asyncio.sleep(0)
    with pytest.raises(RegistryError, match="reader stopped"):
        await registry.check()
    await registry.stop()


async def test_replayed_records_are_aged_by_their_timestamps() -> None:
    registry = LogRegistry(MemoryLog(MemoryHub()), **FAST, clock=lambda: 100.0,
                           wall_clock=lambda: 1000.0)
    fresh = Instance(service="user", instance_id="user-2", url="http://h:2", started_at=0.0)
    from core.service_registry.records import encode
    registry.apply([LogRecord(b"user-1", encode(ME), 990_000),
                    LogRecord(b"user-2", encode(fresh), 999_500)], replayed=True)
    assert await registry.discover("user") == [fresh]
    registry.apply([LogRecord(b"user-1", encode(ME), 990_000)], replayed=False)
    assert await registry.discover("user") == [ME, fresh]
    registry.apply([LogRecord(b"user-1", None, 990_000)], replayed=False)
    assert await registry.discover("user") == [fresh]


@pytest.mark.parametrize(("ttl", "interval", "grace"), [(1, 1, 2), (1, 0, 2), (2, 1, 1.5)])
def test_timings_that_cannot_work_are_refused(ttl: float, interval: float, grace: float) -> None:
    with pytest.raises(RegistryError, match="heartbeat interval < TTL <= grace"):
        LogRegistry(MemoryLog(MemoryHub()), ttl=ttl, heartbeat_interval=interval, grace=grace)


async def test_an_unreadable_record_is_skipped_with_one_warning_per_key(
        caplog: pytest.LogCaptureFixture) -> None:
    from core.service_registry.records import encode
    registry = LogRegistry(MemoryLog(MemoryHub()), **FAST)
    future = b'{"v": 2}'
    for _ in range(3):
        registry.apply([LogRecord(b"user-1", future, None), LogRecord(b"x", b"nope", None)],
                       replayed=False)
    warned = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warned) == 2 and "schema version 2 is not known" in warned[0]
    registry.apply([LogRecord(b"user-1", encode(ME), None)], replayed=False)
    assert await registry.discover("user") == [ME]
    registry.apply([LogRecord(b"user-1", future, None)], replayed=False)
    assert len([r for r in caplog.records if "skipping" in r.getMessage()]) == 3


async def test_aging_stops_while_the_log_is_away_and_resumes_without_a_jump(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "core.service_registry")
    hub = MemoryHub()
    timing = {"ttl": 0.6, "heartbeat_interval": 0.1, "grace": 30.0}
    crashed, live, reader = (memory_registry(hub, **timing) for _ in range(3))
    for registry in (crashed, live, reader):
        await registry.start()
    other = Instance(service="user", instance_id="user-2", url="http://h:2", started_at=0.0)
    await crashed.register(ME)
    await live.register(other)
    await eventually(lambda: _count(reader, 2), timeout=5)
    hub.available = False
    await crashed.abandon()  # dies during the outage
    await asyncio.sleep(1.5)
    assert len(await reader.discover("user")) == 2  # frozen as it was
    assert "the log is out of reach" in caplog.text
    with pytest.raises(RegistryError, match=r"cannot read|out of reach"):
        await reader.check()
    hub.available = True
    await eventually(lambda: "the log is back" in caplog.text, timeout=5)
    assert other in await reader.discover("user")  # no jump: the live one never flaps out
    await eventually(lambda: _count(reader, 1), timeout=5)  # the dead one, a TTL later
    assert await reader.discover("user") == [other]
    await live.stop()
    await reader.stop()


async def _count(registry: LogRegistry, n: int) -> bool:
    return len(await registry.discover("user")) == n


async def test_a_registration_the_log_refuses_is_not_half_done() -> None:
    hub = MemoryHub()
    registry = memory_registry(hub, **FAST)
    await registry.start()
    hub.available = False
    with pytest.raises(RegistryError, match="unavailable"):
        await registry.register(ME)
    with pytest.raises(RegistryError, match="no instance is registered"):
        await registry.heartbeat()
    assert "heartbeat" not in registry._tasks
    hub.available = True
    await registry.register(ME)
    assert await registry.discover("user") == [ME]
    await registry.stop()
