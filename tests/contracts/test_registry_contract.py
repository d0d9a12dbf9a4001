"""The service registry, the same cases on every backend that takes writes (in memory and on
a real Kafka topic): separate registries on one log stand for separate processes.

Register and discover, order and separation by service, deregister and stop remove at once,
heartbeats keep an instance past its TTL, silence ages it out, a late reader sees the live and
not the long dead, tombstones for the long dead, malformed and future records skipped, a
mistaken tombstone healed by the next heartbeat, watch, and the refusals.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import MappingProxyType

import pytest

from core.service_registry import Change, Instance, RegistryError
from tests.contracts.registry_harness import RegistryHarness, Timing
from tests.helpers import eventually, unique


def instance(service: str = "user", n: int = 1, **extra: object) -> Instance:
    return Instance(service=service, instance_id=f"{service}-{n}-{unique('i')}",
                    url=f"http://127.0.0.{n}:8000", version="1.2.3", started_at=1_700_000_000.5,
                    metadata=MappingProxyType({"zone": "a"}), **extra)  # type: ignore[arg-type]


async def ids(registry: object, service: str) -> list[str]:
    return [i.instance_id for i in await registry.discover(service)]  # type: ignore[attr-defined]


async def test_a_registered_instance_is_discovered_by_another_process(
        registries: RegistryHarness) -> None:
    a, reader = await registries.registry(), await registries.registry()
    me = instance()
    await a.register(me)
    found = await eventually(lambda: reader.discover("user"), timeout=10)
    assert found == [me]  # url, id, version, start time and metadata all carried
    assert await a.discover("user") == [me]  # read-your-writes in the registering process
    assert await reader.discover("nobody") == []


async def test_instances_come_back_by_id_and_by_service(registries: RegistryHarness) -> None:
    users = [instance("user", n) for n in (3, 1, 2)]
    made = [await registries.registry() for _ in users]
    auth = await registries.registry()
    for registry, one in zip(made, users, strict=True):
        await registry.register(one)
    await auth.register(instance("auth", 9))
    reader = await registries.registry()
    await eventually(lambda: _count(reader, "user", 3), timeout=10)
    assert await ids(reader, "user") == sorted(u.instance_id for u in users)
    assert [i.service for i in await reader.discover("auth")] == ["auth"]


async def _count(registry: object, service: str, n: int) -> bool:
    return len(await ids(registry, service)) == n


async def test_deregister_and_stop_remove_an_instance_well_before_the_ttl(
        registries: RegistryHarness) -> None:
    slow = Timing(ttl=60.0, heartbeat_interval=1.0, grace=120.0)
    a, b, reader = [await registries.registry(slow) for _ in range(3)]
    await a.register(instance(n=1))
    await b.register(instance(n=2))
    await eventually(lambda: _count(reader, "user", 2), timeout=10)
    started = time.monotonic()
    await a.deregister()
    await b.stop()
    await eventually(lambda: _count(reader, "user", 0), timeout=10)
    assert time.monotonic() - started < slow.ttl / 2


async def test_heartbeats_keep_an_instance_and_silence_ages_it_out(
        registries: RegistryHarness) -> None:
    timing = Timing(ttl=1.5, heartbeat_interval=0.3, grace=60.0)
    a, b, reader = [await registries.registry(timing) for _ in range(3)]
    await a.register(instance(n=1))
    await b.register(instance(n=2))
    await eventually(lambda: _count(reader, "user", 2), timeout=10)
    await asyncio.sleep(timing.ttl * 1.5)  # past the TTL: only heartbeats can keep them
    assert len(await ids(reader, "user")) == 2
    await b.abandon()  # a crash: no tombstone, no more heartbeats
    await eventually(lambda: _count(reader, "user", 1), timeout=timing.ttl + 10)
    assert len(await ids(reader, "user")) == 1


async def test_a_reader_started_late_sees_the_live_and_not_the_long_dead(
        registries: RegistryHarness) -> None:
    timing = Timing(ttl=1.5, heartbeat_interval=0.3, grace=60.0)
    live, dead = await registries.registry(timing), await registries.registry(timing)
    alive, gone = instance(n=1), instance(n=2)
    await live.register(alive)
    await dead.register(gone)
    await dead.abandon()
    await asyncio.sleep(timing.ttl + 0.5)
    late = await registries.registry(timing)
    # Right after start: the replayed history is caught up with, and judged by its age.
    assert await ids(late, "user") == [alive.instance_id]


async def test_a_long_dead_instance_gets_a_tombstone(registries: RegistryHarness) -> None:
    timing = Timing(ttl=1.0, heartbeat_interval=0.2, grace=2.0)
    crashed, reader = await registries.registry(timing), await registries.registry(timing)
    gone = instance()
    await crashed.register(gone)
    await eventually(lambda: _count(reader, "user", 1), timeout=10)
    await crashed.abandon()

    async def buried() -> bool:
        return (gone.instance_id.encode(), None) in await registries.records()

    await eventually(buried, timeout=timing.grace + 15, interval=0.3)
    assert len(reader.table) == 0


async def test_unreadable_records_are_skipped(registries: RegistryHarness) -> None:
    reader = await registries.registry()
    future = json.dumps({"v": 99, "service": "user", "instance_id": "x", "url": "http://x:1",
                         "started_at": 0}).encode()
    # (A compacted Kafka topic refuses records without a key: unit tests cover those.)
    for key, value in [(b"bad-1", b"{not json"), (b"bad-2", b"[1, 2]"), (b"x", future),
                       (b"\xff\xfe", b"{}")]:
        await registries.write_raw(key, value)
    writer = await registries.registry()
    me = instance()
    await writer.register(me)
    assert await eventually(lambda: reader.discover("user"), timeout=10) == [me]
    await reader.check()  # still following, still ready
    late = await registries.registry()
    assert await late.discover("user") == [me]


async def test_a_mistaken_tombstone_is_undone_by_the_next_heartbeat(
        registries: RegistryHarness) -> None:
    a, reader = await registries.registry(), await registries.registry()
    me = instance()
    await a.register(me)
    await eventually(lambda: _count(reader, "user", 1), timeout=10)
    await registries.write_raw(me.instance_id.encode(), None)
    assert await a.discover("user") == [me]  # its own process never drops it
    await eventually(lambda: _count(reader, "user", 1), timeout=10)


async def test_watch_yields_the_state_then_joins_and_leaves(
        registries: RegistryHarness) -> None:
    a, b, reader = [await registries.registry() for _ in range(3)]
    first, second = instance(n=1), instance(n=2)
    await a.register(first)
    await eventually(lambda: _count(reader, "user", 1), timeout=10)
    seen: list[Change] = []
    changes = reader.watch("user")

    async def next_change() -> Change:
        change = await asyncio.wait_for(anext(changes), 15)
        seen.append(change)
        return change

    assert (await next_change()).instances == (first,)
    await b.register(second)
    assert {i.instance_id for i in (await next_change()).instances} == {
        first.instance_id, second.instance_id}
    await a.deregister()
    assert (await next_change()).instances == (second,)
    await changes.aclose()  # type: ignore[attr-defined]
    assert all(c.service == "user" for c in seen)


async def test_watch_of_every_service(registries: RegistryHarness) -> None:
    a, reader = await registries.registry(), await registries.registry()
    changes = reader.watch()
    await a.register(instance("auth"))
    change = await asyncio.wait_for(anext(changes), 15)
    assert change.service == "auth" and len(change.instances) == 1
    await changes.aclose()  # type: ignore[attr-defined]


async def test_the_refusals(registries: RegistryHarness) -> None:
    a = await registries.registry()
    with pytest.raises(RegistryError, match="no instance is registered"):
        await a.heartbeat()
    await a.deregister()  # nothing registered: nothing to do
    one = instance()
    await a.register(one)
    await a.register(one)  # the same again: fine
    with pytest.raises(RegistryError, match="registered already"):
        await a.register(instance(n=2))
    await a.stop()
    await a.stop()  # idempotent
