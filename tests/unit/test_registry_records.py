"""Registry records and aging: what a record means, how old a heartbeat is, who is live, who
is due a tombstone, and which services' live sets moved."""

from __future__ import annotations

import json
import math
from types import MappingProxyType

import pytest

from core.service_registry import Instance
from core.service_registry.records import (
    SCHEMA_VERSION,
    RecordError,
    Tombstone,
    decode,
    encode,
)
from core.service_registry.table import InstanceTable, PausingClock, heard_at

ONE = Instance(service="user", instance_id="user-1", url="http://10.0.0.5:8000",
               version="1.2.3", started_at=1700000000.5,
               metadata=MappingProxyType({"zone": "a"}))


def body(**changes: object) -> bytes:
    fields: dict[str, object] = {"v": 1, "service": "user", "instance_id": "user-1",
                                 "url": "http://x:1", "version": "1", "started_at": 5,
                                 "metadata": {"zone": "a"}}
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


# -- records


def test_a_record_round_trips_and_is_compact_json() -> None:
    value = encode(ONE)
    assert value == (b'{"v":1,"service":"user","instance_id":"user-1","url":"http://10.0.0.5:8000",'
                     b'"version":"1.2.3","started_at":1700000000.5,"metadata":{"zone":"a"}}')
    assert decode(b"user-1", value) == ONE
    assert SCHEMA_VERSION == 1


def test_a_null_value_is_a_tombstone() -> None:
    assert decode(b"user-1", None) == Tombstone("user-1")


def test_optional_fields_default() -> None:
    got = decode(b"user-1", body(version=..., metadata=...))
    assert isinstance(got, Instance)
    assert got.version == "" and dict(got.metadata) == {} and got.started_at == 5.0
    assert isinstance(got.started_at, float)
    assert dict(decode(b"user-1", body(metadata=None)).metadata) == {}  # type: ignore[union-attr]


@pytest.mark.parametrize(("key", "value", "reason"), [
    (None, body(), "^record without a key$"),
    (b"", body(), "^record without a key$"),
    (b"\xff", body(), "key is not UTF-8"),
    (b"user-1", b"{nope", "user-1: value is not JSON"),
    (b"user-1", b"\xff\xfe", "user-1: value is not JSON"),
    (b"user-1", b"[1]", "user-1: value is not a JSON object"),
    (b"user-1", body(v=2), "user-1: schema version 2 is not known .this reader knows 1."),
    (b"user-1", body(v=...), "schema version None is not known"),
    (b"user-1", body(v="1"), "schema version '1' is not known"),
    (b"user-1", body(service=""), "user-1: 'service' must be a non-empty string, got ''"),
    (b"user-1", body(service=...), "'service' must be a non-empty string, got None"),
    (b"user-1", body(url=5), "^user-1: 'url' must be a non-empty string, got 5$"),
    (b"user-1", body(instance_id=...), "^user-1: 'instance_id' must be"),
    (b"user-1", body(version=3), "user-1: 'version' must be a string, got 3"),
    (b"user-1", body(started_at="5"), "user-1: 'started_at' must be a number, got '5'"),
    (b"user-1", body(started_at=True), "'started_at' must be a number, got True"),
    (b"user-1", body(started_at=...), "'started_at' must be a number, got None"),
    (b"user-1", body(metadata=["a"]), "user-1: 'metadata' must map strings to strings"),
    (b"user-1", body(metadata={"a": 1}), "'metadata' must map strings to strings"),
    (b"user-2", body(), "user-2: the value names instance 'user-1'"),
])
def test_unreadable_records_are_refused_with_the_reason(
        key: bytes | None, value: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        decode(key, value)


def test_an_empty_version_is_allowed() -> None:
    assert decode(b"user-1", body(version="")).version == ""  # type: ignore[union-attr]


# -- heartbeat age


def test_a_live_record_was_heard_when_it_arrived() -> None:
    assert heard_at(100.0, replayed=False, wall_now=5000.0, timestamp_ms=1) == 100.0


def test_a_replayed_record_is_as_old_as_its_timestamp_says() -> None:
    assert heard_at(100.0, replayed=True, wall_now=5000.0, timestamp_ms=4990_500) == 90.5
    assert heard_at(100.0, replayed=True, wall_now=10.0, timestamp_ms=0) == 90.0


def test_a_replayed_record_from_the_future_is_fresh_and_one_without_a_time_is_not() -> None:
    assert heard_at(100.0, replayed=True, wall_now=5000.0, timestamp_ms=5009_000) == 100.0
    assert heard_at(100.0, replayed=True, wall_now=5000.0, timestamp_ms=None) == -math.inf
    assert heard_at(100.0, replayed=True, wall_now=5000.0, timestamp_ms=-1) == -math.inf


# -- the table


def inst(service: str, n: int) -> Instance:
    return Instance(service=service, instance_id=f"{service}-{n}", url=f"http://h{n}:1",
                    started_at=0.0)


def test_live_is_within_the_ttl_by_id() -> None:
    table = InstanceTable(ttl=10, grace=60)
    table.upsert(inst("user", 2), heard=100, received=100)
    table.upsert(inst("user", 1), heard=95, received=100)
    table.upsert(inst("auth", 3), heard=100, received=100)
    assert [i.instance_id for i in table.live("user", 105)] == ["user-1", "user-2"]
    assert [i.instance_id for i in table.live("user", 105.0001)] == ["user-2"]
    assert table.live("user", 110.5) == []
    assert table.services(105) == ["auth", "user"]
    assert table.services(110) == ["auth", "user"]
    assert table.services(110.1) == []
    assert len(table) == 3 and table.get("auth-3") == inst("auth", 3)
    table.remove("auth-3")
    table.remove("nobody")
    assert table.get("auth-3") is None and len(table) == 2


def test_an_older_heartbeat_never_wins_but_the_newer_record_does() -> None:
    table = InstanceTable(ttl=10, grace=60)
    table.upsert(inst("user", 1), heard=100, received=100)
    moved = Instance(service="user", instance_id="user-1", url="http://moved:1")
    table.upsert(moved, heard=50, received=101)
    assert table.live("user", 109) == [moved]
    table.upsert(moved, heard=120, received=120)
    assert table.live("user", 129) == [moved]


def test_dead_needs_silence_past_the_grace_by_both_clocks_and_spares_its_own() -> None:
    table = InstanceTable(ttl=10, grace=60)
    table.upsert(inst("user", 1), heard=0, received=0)
    table.upsert(inst("user", 2), heard=-500, received=50)  # replayed old, received lately
    table.upsert(inst("user", 3), heard=50, received=0)
    table.upsert(inst("user", 4), heard=0, received=0)
    assert table.dead(60) == []
    assert table.dead(60.5) == ["user-1", "user-4"]
    assert table.dead(110) == ["user-1", "user-4"]  # exactly the grace: not yet
    assert table.dead(60.5, spare="user-4") == ["user-1"]
    assert table.dead(110.5) == ["user-1", "user-2", "user-3", "user-4"]


def test_changed_reports_joins_leaves_and_age_outs_once() -> None:
    table = InstanceTable(ttl=10, grace=60)
    assert table.changed(0) == {}
    table.upsert(inst("user", 1), heard=0, received=0)
    assert table.changed(0) == {"user": (inst("user", 1),)}
    assert table.changed(5) == {}
    table.upsert(inst("user", 2), heard=5, received=5)
    assert table.changed(5) == {"user": (inst("user", 1), inst("user", 2))}
    assert table.changed(12) == {"user": (inst("user", 2),)}  # user-1 aged out
    table.remove("user-2")
    assert table.changed(12) == {"user": ()}
    assert table.changed(13) == {}  # an empty service is reported once
    table.upsert(inst("auth", 1), heard=0, received=0)
    assert table.changed(20) == {}  # never live: nothing to report


# -- the clock that stops while the log is away


def test_the_clock_stops_at_the_last_contact_and_resumes_without_a_jump() -> None:
    real = [100.0]
    clock = PausingClock(lambda: real[0])
    assert clock.now() == 100.0 and clock.in_contact
    real[0] = 105.0
    clock.contact()
    real[0] = 107.0
    clock.lost()
    assert not clock.in_contact and clock.now() == 105.0
    real[0] = 120.0
    clock.lost()  # still away: still the last contact
    assert clock.now() == 105.0
    clock.contact()
    assert clock.in_contact and clock.now() == 105.0
    real[0] = 121.5
    assert clock.now() == 106.5
    clock.contact()
    clock.contact()
    assert clock.now() == 106.5
    real[0] = 130.0
    clock.lost()  # lost since the last contact, at 121.5
    assert clock.now() == 106.5
    clock.contact()
    assert clock.now() == 106.5


def test_a_clock_that_never_had_contact_stops_where_it_started() -> None:
    real = [100.0]
    clock = PausingClock(lambda: real[0])
    real[0] = 130.0
    clock.lost()
    assert not clock.in_contact and clock.now() == 100.0
