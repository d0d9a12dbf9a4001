"""`LogRegistry`'s own rules, each pinned on a log that misbehaves in one chosen way: what its
messages say, which writes are bounded by what, which tasks it runs and stops, how watchers
hear of changes, which tombstones it honours, and how it logs failures that repeat.

(The cases in `test_registry_following.py` are the registry's unhappy paths end to end; these
are the details a mutation run showed no test held down.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from core.service_registry import following
from core.service_registry.base import Change, Instance, RegistryError
from core.service_registry.following import LogRegistry
from core.service_registry.log import LogRecord
from core.service_registry.memory import MemoryHub, MemoryLog
from core.service_registry.records import encode
from tests.helpers import eventually

FAST = {"ttl": 1.0, "heartbeat_interval": 0.1, "grace": 30.0}
ME = Instance(service="user", instance_id="user-1", url="http://h:1", started_at=0.0)
OTHER = Instance(service="user", instance_id="user-2", url="http://h:2", started_at=0.0)


class RiggedLog(MemoryLog):
    """A `MemoryLog` that can be told to misbehave in one way at a time."""

    def __init__(self, hub: MemoryHub) -> None:
        super().__init__(hub, poll_timeout=0.05)
        self.opened_with: float | None = None
        self.writes_hang = False
        self.refused_keys: set[str] = set()  # their records (not tombstones) are refused
        self.failures_left = 0  # writes refused before they work again
        self.ping_hangs = False
        self.read_error: Exception | None = None

    async def open(self, timeout: float) -> None:
        self.opened_with = timeout
        await super().open(timeout)

    async def write(self, key: str, value: bytes | None) -> None:
        if self.writes_hang:
            await asyncio.Event().wait()
        if self.failures_left > 0:
            self.failures_left -= 1
            raise RegistryError("refused on purpose")
        if key in self.refused_keys and value is not None:
            raise RegistryError("refused on purpose")
        await super().write(key, value)

    async def ping(self) -> None:
        if self.ping_hangs:
            await asyncio.Event().wait()
        await super().ping()

    async def read(self) -> list[LogRecord]:
        if self.read_error is not None:
            await asyncio.sleep(0.02)
            raise self.read_error
        return await super().read()


@pytest.fixture
async def rigged() -> AsyncIterator[tuple[LogRegistry, RiggedLog]]:
    log = RiggedLog(MemoryHub())
    registry = LogRegistry(log, **FAST)
    yield registry, log
    log.writes_hang = False
    log.ping_hangs = False
    log.read_error = None
    log.refused_keys.clear()
    await registry.stop()


def _running() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if not t.done()}


def _names(tasks: set[asyncio.Task[object]]) -> list[str]:
    return sorted(t.get_name() for t in tasks if not t.done())


# -- construction --------------------------------------------------------------------------


def test_the_sweep_runs_four_times_per_ttl_or_per_heartbeat_whichever_is_sooner() -> None:
    assert LogRegistry(MemoryLog(MemoryHub()), ttl=1.0, heartbeat_interval=0.5,
                       grace=2.0).tick == 0.25
    assert LogRegistry(MemoryLog(MemoryHub()), ttl=1.0, heartbeat_interval=0.1,
                       grace=2.0).tick == 0.1


def test_a_grace_period_equal_to_the_ttl_is_allowed_and_the_refusal_says_why() -> None:
    LogRegistry(MemoryLog(MemoryHub()), ttl=1.0, heartbeat_interval=0.5, grace=1.0)
    with pytest.raises(RegistryError) as refused:
        LogRegistry(MemoryLog(MemoryHub()), ttl=1.0, heartbeat_interval=1.0, grace=1.0)
    assert str(refused.value) == ("need 0 < heartbeat interval < TTL <= grace period, got 1, "
                                  "1, 1")


async def test_the_log_gets_the_start_timeout(rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, log = rigged
    await registry.start()
    assert log.opened_with == 30.0
    other = RiggedLog(MemoryHub())
    quick = LogRegistry(other, start_timeout=2.5, **FAST)
    await quick.start()
    assert other.opened_with == 2.5
    await quick.stop()


# -- lifecycle and tasks -------------------------------------------------------------------


async def test_its_tasks_are_named_one_heartbeat_runs_however_often_it_registers_and_all_stop(
        rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, _ = rigged
    before = _running()
    await registry.start()
    assert _names(_running() - before) == ["registry-reader", "registry-sweeper"]
    await registry.register(ME)
    await registry.register(ME)  # the same instance again: a no-op for the tasks
    ours = _running() - before
    assert _names(ours) == ["registry-heartbeat", "registry-reader", "registry-sweeper"]
    await registry.deregister()
    await asyncio.sleep(0)
    assert _names(ours) == ["registry-reader", "registry-sweeper"]
    assert "heartbeat" not in registry._tasks
    await registry.stop()
    await asyncio.sleep(0)
    assert _names(ours) == []
    with pytest.raises(RegistryError) as stopped:
        await registry.check()
    assert str(stopped.value) == "the registry is not started"


async def test_a_second_instance_is_refused_until_the_first_is_deregistered(
        rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, _ = rigged
    with pytest.raises(RegistryError) as early:
        await registry.register(ME)
    assert str(early.value) == "start the registry before registering"
    await registry.start()
    await registry.register(ME)
    with pytest.raises(RegistryError) as second:
        await registry.register(OTHER)
    assert str(second.value) == "instance user-1 is registered already; deregister it first"
    await registry.deregister()
    await registry.register(OTHER)
    assert await registry.discover("user") == [OTHER]


async def test_a_failed_re_registration_keeps_the_instance_registered(
        rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, log = rigged
    await registry.start()
    await registry.register(ME)
    log.failures_left = 1
    with pytest.raises(RegistryError):
        await registry.register(ME)
    await registry.heartbeat()  # still the registered instance: its heartbeat goes out
    assert [r.key for r in log.hub.records].count(b"user-1") >= 2


async def test_a_heartbeat_without_an_instance_says_so(
        rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, _ = rigged
    await registry.start()
    with pytest.raises(RegistryError) as none:
        await registry.heartbeat()
    assert str(none.value) == "no instance is registered"


async def test_its_own_heartbeats_keep_it_live_even_before_its_reader_reads_them_back(
        rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, log = rigged
    await registry.start()
    await registry.register(ME)
    log.read_error = None
    log.hub.records.clear()  # nothing left to read back

    async def never_read() -> list[LogRecord]:
        await asyncio.sleep(0.05)
        return []

    log.read = never_read  # type: ignore[method-assign]
    await asyncio.sleep(FAST["ttl"] * 1.5)
    assert await registry.discover("user") == [ME]


# -- bounded writes ------------------------------------------------------------------------


async def test_a_write_without_an_acknowledgement_fails_within_the_ttl(
        rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, log = rigged
    await registry.start()
    log.writes_hang = True
    started = time.monotonic()
    with pytest.raises(RegistryError) as unacknowledged:
        await registry.register(ME)
    assert str(unacknowledged.value) == "no acknowledgement within 1s"
    assert time.monotonic() - started < 3.0


async def test_a_deregistration_waits_for_its_tombstone_no_longer_than_its_own_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(following, "DEREGISTER_TIMEOUT", 0.1)
    log = RiggedLog(MemoryHub())
    registry = LogRegistry(log, ttl=5.0, heartbeat_interval=1.0, grace=30.0)
    await registry.start()
    await registry.register(ME)
    log.writes_hang = True
    started = time.monotonic()
    await registry.deregister()
    assert time.monotonic() - started < 2.0  # 0.1 s, not the TTL's 5
    assert await registry.discover("user") == []
    log.writes_hang = False
    await registry.stop()


# -- watching ------------------------------------------------------------------------------


async def test_a_watcher_gets_the_state_then_each_change(
        rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, _ = rigged
    await registry.start()
    peer = LogRegistry(MemoryLog(rigged[1].hub, poll_timeout=0.05), **FAST)
    await peer.start()
    await peer.register(OTHER)
    await eventually(lambda: registry.discover("user"), timeout=5)
    driver = Instance(service="driver", instance_id="driver-1", url="http://h:9",
                      started_at=0.0)
    registry.apply([LogRecord(b"driver-1", encode(driver), None)], replayed=False)
    watch = registry.watch("user")  # nothing about drivers
    assert await anext(watch) == Change("user", (OTHER,))
    await registry.register(ME)
    assert await asyncio.wait_for(anext(watch), 5) == Change("user", (ME, OTHER))
    everything = registry.watch()
    assert await anext(everything) == Change("driver", (driver,))
    assert await anext(everything) == Change("user", (ME, OTHER))
    await peer.stop()
    assert await asyncio.wait_for(anext(watch), 5) == Change("user", (ME,))
    await watch.aclose()
    await everything.aclose()


# -- what it reads ------------------------------------------------------------------------


async def test_tombstones_remove_others_but_never_this_process_s_own_instance(
        rigged: tuple[LogRegistry, RiggedLog]) -> None:
    registry, _ = rigged
    await registry.start()
    await registry.register(ME)
    third = Instance(service="user", instance_id="user-3", url="http://h:3", started_at=0.0)
    registry.apply([LogRecord(b"user-2", encode(OTHER), None),
                    LogRecord(b"user-1", None, None),  # someone buried us by mistake
                    LogRecord(b"user-3", encode(third), None)], replayed=False)
    assert await registry.discover("user") == [ME, OTHER, third]
    registry.apply([LogRecord(b"user-2", None, None), LogRecord(b"user-3", None, None)],
                   replayed=False)
    assert await registry.discover("user") == [ME]


async def test_records_replayed_at_start_are_aged_by_when_they_were_written() -> None:
    hub = MemoryHub()
    hub.records.append(LogRecord(b"user-1", encode(ME), int((time.time() - 100) * 1000)))
    hub.records.append(LogRecord(b"user-2", encode(OTHER), int(time.time() * 1000)))
    registry = LogRegistry(MemoryLog(hub), **FAST)
    await registry.start()
    assert await registry.discover("user") == [OTHER]  # user-1 fell silent 100 s ago
    await registry.stop()


class SlowToCatchUp(MemoryLog):
    """A reader that reads (records come in) but never reaches the end it saw at open."""

    @property
    def caught_up(self) -> bool:
        return False


async def test_reading_is_not_catching_up() -> None:
    hub = MemoryHub()
    registry = LogRegistry(SlowToCatchUp(hub, poll_timeout=0.01), catch_up_timeout=0.1,
                           **FAST)
    await registry.start()
    await hub.append("user-2", encode(OTHER))
    await eventually(lambda: registry.discover("user"), timeout=5)  # it has read since
    with pytest.raises(RegistryError) as behind:
        await registry.check()
    assert str(behind.value) == "the registry reader has not caught up with the log yet"
    await registry.stop()


async def test_a_reader_stopped_or_failing_says_which_and_warns_once(
        rigged: tuple[LogRegistry, RiggedLog], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(following, "READ_RETRY", 0.02)
    registry, log = rigged
    caplog.set_level(logging.INFO, "core.service_registry")
    await registry.start()
    log.read_error = TimeoutError()  # an error with no message: its type says what happened
    await asyncio.sleep(0.3)  # several failed reads
    with pytest.raises(RegistryError) as failing:
        await registry.check()
    assert str(failing.value) == "the registry reader cannot read: TimeoutError"
    warned = [r for r in caplog.records if "reading the log failed" in r.getMessage()]
    assert len(warned) == 1
    log.read_error = None
    await eventually(lambda: "reading the log again" in caplog.text, timeout=5)
    registry._tasks["reader"].cancel()
    await asyncio.sleep(0)
    with pytest.raises(RegistryError) as stopped:
        await registry.check()
    assert str(stopped.value) == "the registry reader stopped"


# -- the sweeper --------------------------------------------------------------------------


async def test_a_log_that_does_not_answer_its_ping_is_out_of_reach_and_coming_back_is_logged_once(
        rigged: tuple[LogRegistry, RiggedLog], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(following, "PING_TIMEOUT", 0.1)
    registry, log = rigged
    caplog.set_level(logging.INFO, "core.service_registry")
    await registry.start()
    await asyncio.sleep(0.3)  # a few sweeps in contact: nothing to say
    assert "the log is back" not in caplog.text
    log.ping_hangs = True

    async def out_of_reach() -> bool:
        try:
            await registry.check()
        except RegistryError as exc:
            assert str(exc) == ("the registry log is out of reach; instances are kept as "
                                "they were when it was last reached")
            return True
        return False

    await eventually(out_of_reach, timeout=5)
    log.ping_hangs = False
    await eventually(lambda: "the log is back" in caplog.text, timeout=5)
    await asyncio.sleep(0.3)
    assert caplog.text.count("the log is back") == 1


async def test_its_own_instance_is_never_tombstoned_by_its_own_sweeper() -> None:
    log = RiggedLog(MemoryHub())
    registry = LogRegistry(log, ttl=0.3, heartbeat_interval=0.05, grace=0.6)
    await registry.start()
    await registry.register(ME)
    log.refused_keys.add("user-1")  # its heartbeats fail; tombstones would go through
    await asyncio.sleep(1.2)  # silent past the grace period
    assert all(r.value is not None for r in log.hub.records)
    log.refused_keys.clear()
    await registry.abandon()


async def test_each_run_of_failing_heartbeats_is_logged_once_with_its_recovery(
        rigged: tuple[LogRegistry, RiggedLog], caplog: pytest.LogCaptureFixture) -> None:
    registry, log = rigged
    caplog.set_level(logging.INFO, "core.service_registry")
    await registry.start()
    await registry.register(ME)
    for run in (1, 2):
        log.failures_left = 1  # one heartbeat fails, the next works
        await eventually(lambda: log.failures_left == 0, timeout=5)
        await eventually(lambda n=run: caplog.text.count("heartbeats resumed after 1 failures")
                         == n, timeout=5)
    assert caplog.text.count("heartbeat failed") == 2


async def test_a_buried_instance_is_forgotten_at_once_not_buried_again_each_sweep() -> None:
    log = RiggedLog(MemoryHub())
    registry = LogRegistry(log, ttl=0.3, heartbeat_interval=0.05, grace=0.6)
    await registry.start()

    async def never_read() -> list[LogRecord]:  # its own tombstone never comes back
        await asyncio.sleep(0.05)
        return []

    log.read = never_read  # type: ignore[method-assign]
    registry.apply([LogRecord(b"user-2", encode(OTHER), None)], replayed=False)
    await asyncio.sleep(1.5)  # silent past the grace period, then several sweeps
    tombstones = [r for r in log.hub.records if r.key == b"user-2" and r.value is None]
    assert len(tombstones) == 1 and len(registry.table) == 0
    await registry.stop()
