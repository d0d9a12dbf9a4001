"""FORWARDED_ALLOW_IPS: whose X-Forwarded-For a service believes (the gateway's address).

uvicorn takes an entry it cannot parse for a literal no peer ever has, silently, which is how
a service ends up trusting nobody and counting every client as the gateway; the settings refuse
such entries by name. The auth image ships a value that covers the container networks."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings(value: str, environment: str = "development") -> Settings:
    return Settings(forwarded_allow_ips=value, environment=environment,
                    database_url="postgresql+asyncpg://x@h/db",
                    kafka_topic_replication_factor=3,
                    registry_signing_key="k" * 32,  # production asks for one too
                    _env_file=None)


@pytest.mark.parametrize("value", ["127.0.0.1,::1", "10.0.0.0/8, 172.16.0.0/12", "fd00::/8",
                                   "192.168.3.7", "*"])
def test_addresses_and_networks_are_taken(value: str) -> None:
    assert settings(value).forwarded_allow_ips == value


@pytest.mark.parametrize(("value", "named"), [
    ("gateway", "'gateway'"), ("10.0.0.1/8", "'10.0.0.1/8'"), ("127.0.0.1,,", "''"),
    ("172.16.0.0/33", "'172.16.0.0/33'")])
def test_an_entry_uvicorn_would_ignore_is_refused_by_name(value: str, named: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(named)):
        settings(value)


def test_trusting_every_peer_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="trusts every peer"):
        settings("*", "production")
    assert settings("10.0.0.0/8", "production").forwarded_allow_ips == "10.0.0.0/8"


def test_the_images_trust_the_container_networks_and_nothing_public() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    shipped = re.search(r"FORWARDED_ALLOW_IPS=(\S+)", dockerfile)
    assert shipped is not None, "the images must say whose X-Forwarded-For it believes"
    value = shipped.group(1)
    settings(value, "production")  # valid where it counts
    networks = [ipaddress.ip_network(e) for e in value.split(",")]
    for gateway in ("172.18.0.5", "10.244.1.17", "192.168.65.3", "127.0.0.1"):
        assert any(ipaddress.ip_address(gateway) in n for n in networks), gateway
    for stranger in ("8.8.8.8", "203.0.113.9", "2001:db8::1"):
        assert not any(ipaddress.ip_address(stranger) in n for n in networks), stranger
