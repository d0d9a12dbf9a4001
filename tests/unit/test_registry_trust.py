"""Which registry records a reader believes (`RecordTrust`, through `LogRegistry.apply`): signed
with a platform key, unchanged, fresh, newer than what it replaces, on an allowed network.
The clocks are fakes, so expiry and replays are decided exactly; the real broker and the real
gateway are in gateway/tests/test_registry_trust.py."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import Settings
from core.service_registry import Instance, RegistryError
from core.service_registry.factory import record_trust, registry_from_settings
from core.service_registry.following import LogRegistry
from core.service_registry.log import LogRecord
from core.service_registry.memory import MemoryHub, MemoryLog
from core.service_registry.records import encode
from core.service_registry.trust import AllowedNetworks, RecordRefusedError, RecordTrust, read_keys

KEY, OTHER = b"k" * 32, b"o" * 32
TTL = 10.0
AUTH = Instance(service="auth", instance_id="auth-1", url="http://127.0.0.1:9101",
                started_at=1.0)


class Wall:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def trust(wall: Wall, keys: tuple[bytes, ...] = (KEY,), networks: str = "") -> RecordTrust:
    return RecordTrust(list(keys), ttl=TTL, skew=2.0, clock=wall,
                       networks=AllowedNetworks(networks.split(",")))


def reader(wall: Wall, keys: tuple[bytes, ...] = (KEY,), networks: str = "") -> LogRegistry:
    return LogRegistry(MemoryLog(MemoryHub()), ttl=TTL, heartbeat_interval=1.0, grace=60.0,
                       wall_clock=wall, trust=trust(wall, keys, networks))


def record(value: bytes | None, key: str = "auth-1", at: float | None = None) -> LogRecord:
    return LogRecord(key.encode(), value, None if at is None else int(at * 1000))


async def live(registry: LogRegistry) -> list[str]:
    return [i.url for i in await registry.discover("auth")]


async def test_a_record_signed_with_the_key_is_believed() -> None:
    wall = Wall()
    registry = reader(wall)
    registry.apply([record(encode(AUTH, trust(wall).seal))], replayed=False)
    assert await live(registry) == [AUTH.url] and registry.refused == {}


@pytest.mark.parametrize(("value", "reason"), [
    (encode(AUTH), "unsigned"),
    (b"SIGNED-WITH-OTHER", "signature"),
    (b"URL-CHANGED", "signature"),
    (b"SIG-NOT-HEX", "signature"),
])
async def test_unsigned_forged_and_altered_records_are_refused(
        value: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    wall = Wall()
    good = json.loads(encode(AUTH, trust(wall).seal))
    value = {
        b"SIGNED-WITH-OTHER": encode(AUTH, trust(wall, keys=(OTHER,)).seal),
        b"URL-CHANGED": json.dumps({**good, "url": "http://127.0.0.1:6666"}).encode(),
        b"SIG-NOT-HEX": json.dumps({**good, "sig": "zz"}).encode(),
    }.get(value, value)
    registry = reader(wall)
    caplog.set_level(logging.WARNING, "core.service_registry")
    registry.apply([record(value)] * 3, replayed=False)
    assert await live(registry) == [] and registry.refused == {reason: 3}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned  # once per instance id and reason, not per heartbeat
    assert f"REFUSED a record ({reason}): auth instance auth-1 at " in warned[0]


async def test_an_old_signed_record_written_again_is_refused_once_it_expired() -> None:
    wall = Wall()
    old = encode(AUTH, trust(wall).seal)
    wall.now += TTL + 2.0 + 0.001  # one TTL and the allowed skew later
    registry = reader(wall)
    registry.apply([record(old, at=wall.now)], replayed=True)
    registry.apply([record(old)], replayed=False)
    assert await live(registry) == [] and registry.refused == {"expired": 2}


async def test_history_that_expired_in_the_log_is_skipped_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    wall = Wall()
    written_at = wall.now
    old = encode(AUTH, trust(wall).seal)
    wall.now += 3600
    registry = reader(wall)
    caplog.set_level(logging.WARNING, "core.service_registry")
    registry.apply([record(old, at=written_at)], replayed=True)
    assert await live(registry) == [] and registry.refused == {} and not caplog.records


async def test_the_last_record_of_a_deregistered_instance_cannot_resurrect_it() -> None:
    wall = Wall()
    writer = trust(wall)
    first, last = encode(AUTH, writer.seal), encode(AUTH, writer.seal)
    registry = reader(wall)
    registry.apply([record(first), record(last)], replayed=False)
    assert await live(registry) == [AUTH.url]
    registry.apply([record(None), record(last), record(first)], replayed=False)
    assert await live(registry) == [] and registry.refused == {"replayed": 2}
    registry.apply([record(encode(AUTH, writer.seal))], replayed=False)  # it comes back itself
    assert await live(registry) == [AUTH.url]


async def test_an_older_record_does_not_replace_a_newer_one_but_the_same_one_again_may() -> None:
    wall = Wall()
    writer = trust(wall)
    older = encode(AUTH, writer.seal)
    moved = Instance(service="auth", instance_id="auth-1", url="http://127.0.0.1:9200")
    newer = encode(moved, writer.seal)
    registry = reader(wall)
    registry.apply([record(newer), record(newer), record(older)], replayed=False)
    assert await live(registry) == [moved.url] and registry.refused == {"replayed": 1}


async def test_addresses_outside_the_allowed_networks_are_refused_signed_or_not() -> None:
    wall = Wall()
    writer = trust(wall)
    registry = reader(wall, networks="127.0.0.0/8,::1,.svc.cluster.local,auth")
    ok = ["http://127.0.0.2:1", "http://[::1]:1", "http://[::ffff:127.0.0.1]:1",
          "http://auth.default.svc.cluster.local:80", "http://AUTH:80"]
    bad = ["http://10.0.0.1:1", "http://[::2]:1", "http://evil.example:1",
           "http://svc.cluster.local.evil:1", "http://xauth:1"]
    for n, url in enumerate(ok + bad):
        instance = Instance(service="auth", instance_id=f"auth-{n}", url=url)
        registry.apply([record(encode(instance, writer.seal), key=f"auth-{n}")],
                       replayed=False)
    assert await live(registry) == ok
    assert registry.refused == {"network": len(bad)}


async def test_a_second_key_verifies_while_the_first_signs(tmp_path: Path) -> None:
    wall = Wall()
    registry = reader(wall, keys=(KEY, OTHER))
    registry.apply([record(encode(AUTH, trust(wall, keys=(OTHER,)).seal))], replayed=False)
    assert await live(registry) == [AUTH.url]
    file = tmp_path / "registry.key"
    file.write_text("new" * 11 + "\n\n" + "old" * 11 + "\n")
    os.chmod(file, 0o600)
    assert read_keys(None, str(file)) == [b"new" * 11, b"old" * 11]


def test_keys_are_read_with_clear_errors(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    assert read_keys(None, None) == []
    with pytest.raises(RegistryError, match="at least 32 bytes, got 5"):
        read_keys("short", None)
    with pytest.raises(RegistryError, match=r"REGISTRY_SIGNING_KEY_FILE .*missing: No such"):
        read_keys(None, str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(RegistryError, match="holds no key"):
        read_keys(None, str(empty))
    loose = tmp_path / "loose"
    loose.write_text("x" * 40)
    os.chmod(loose, 0o644)
    caplog.set_level(logging.WARNING, "core.service_registry")
    assert read_keys(None, str(loose)) == [b"x" * 40]
    assert "readable by other users" in caplog.text


def test_settings_build_the_trust_and_production_requires_a_key() -> None:
    assert record_trust(Settings()) is None
    built = record_trust(Settings(registry_signing_key="s" * 32,
                                  registry_allowed_networks="10.0.0.0/8"))
    assert built is not None and built.keys == (b"s" * 32,)
    assert built.networks.allows("http://10.1.2.3:80")
    registry = registry_from_settings(Settings(registry_signing_key="s" * 32))
    assert isinstance(registry, LogRegistry) and registry.trust is not None
    with pytest.raises(ValidationError, match="REGISTRY_ALLOWED_NETWORKS: 'not a/net'"):
        Settings(registry_allowed_networks="not a/net")
    production = {"environment": "production", "database_url": "postgresql+asyncpg://h/d",
                  "kafka_topic_replication_factor": 3}
    with pytest.raises(ValidationError, match="REGISTRY_SIGNING_KEY or REGISTRY_SIGNING_KEY_FILE"):
        Settings(**production)  # type: ignore[arg-type]
    Settings(**production, registry_signing_key="s" * 32)  # type: ignore[arg-type]
    Settings(**production, registry_backend="static",  # type: ignore[arg-type]
             registry_static="auth=http://a:1")


def test_the_seal_is_never_twice_the_same_time_and_refusals_say_why() -> None:
    wall = Wall()
    writer = trust(wall)
    a, b = (json.loads(encode(AUTH, writer.seal)) for _ in range(2))
    assert b["signed_at"] > a["signed_at"] and a["expires_at"] == a["signed_at"] + TTL
    with pytest.raises(RecordRefusedError) as refused:
        trust(wall).admit(AUTH, encode(AUTH), None)
    assert refused.value.reason == "unsigned"
    assert RecordTrust([], ttl=1.0).seal({"a": 1}) == {"a": 1}  # no key: records as before
    with pytest.raises(RegistryError, match="skew >= 0"):
        RecordTrust([KEY], ttl=1.0, skew=-1)


async def test_what_is_remembered_against_replays_is_forgotten_once_it_expired() -> None:
    wall = Wall()
    writer = trust(wall)
    registry = reader(wall)
    assert registry.trust is not None
    for n in range(3):
        instance = Instance(service="auth", instance_id=f"auth-{n}", url=AUTH.url)
        registry.apply([record(encode(instance, writer.seal), key=f"auth-{n}")], replayed=False)
    assert registry.trust.remembered == 3
    wall.now += TTL + 2.0 + 1
    registry.apply([record(encode(AUTH, writer.seal))], replayed=False)
    assert registry.trust.remembered == 1  # auth-1 only: the others would be expired anyway


def test_kafka_credentials_come_from_settings_and_are_required_for_sasl() -> None:
    assert Settings().kafka().extra == {}
    sasl = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="auth",
                    kafka_sasl_password="pw", kafka_ssl_ca_location="/etc/ca.pem")
    assert sasl.kafka().extra == {"security.protocol": "SASL_SSL",
                                  "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "auth",
                                  "sasl.password": "pw", "ssl.ca.location": "/etc/ca.pem"}
    assert Settings(kafka_security_protocol="SSL").kafka().extra == {"security.protocol": "SSL"}
    with pytest.raises(ValidationError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="auth")


async def test_an_instance_registered_with_a_key_is_signed_and_its_readers_believe_it() -> None:
    wall, hub = Wall(), MemoryHub()
    writer = LogRegistry(MemoryLog(hub), ttl=TTL, heartbeat_interval=1.0, grace=60.0,
                         wall_clock=wall, trust=trust(wall))
    await writer.start()
    await writer.register(AUTH)
    await writer.abandon()
    registry = reader(wall)
    registry.apply([record(r.value) for r in hub.records], replayed=False)
    assert await live(registry) == [AUTH.url] and registry.refused == {}


async def test_refusals_are_remembered_for_ten_thousand_keys_then_all_forgotten(
        caplog: pytest.LogCaptureFixture) -> None:
    """A writer cycling instance ids must not grow the memory of warnings without bound."""
    registry = reader(Wall())
    caplog.set_level(logging.WARNING, "core.service_registry.following")

    def unsigned(n: int) -> LogRecord:
        return record(encode(replace(AUTH, instance_id=f"auth-{n}")), key=f"auth-{n}")

    def warns(n: int) -> bool:
        caplog.clear()
        registry.apply([unsigned(n)], replayed=False)
        return any("REFUSED" in r.getMessage() for r in caplog.records)

    registry.apply([unsigned(n) for n in range(9_999)], replayed=False)
    assert registry.refused == {"unsigned": 9_999}
    assert warns(9_999)  # the ten thousandth key: remembered beside the others
    assert not warns(0)  # remembered: said once already
    assert warns(10_000)  # one key more: everything before is forgotten
    assert warns(0)


async def test_a_refusal_is_warned_again_once_a_record_of_that_instance_was_believed(
        caplog: pytest.LogCaptureFixture) -> None:
    wall = Wall()
    registry = reader(wall)
    caplog.set_level(logging.WARNING, "core.service_registry.following")

    def warns(value: bytes) -> bool:
        caplog.clear()
        registry.apply([record(value)], replayed=False)
        return any("REFUSED" in r.getMessage() for r in caplog.records)

    assert warns(encode(AUTH))  # unsigned
    assert not warns(encode(AUTH))  # said already
    assert not warns(encode(AUTH, trust(wall).seal))  # believed: the instance is fine again
    assert warns(encode(AUTH))  # so a new refusal of it is news
