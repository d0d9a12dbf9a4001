"""Which broker a `memory://NAME` address names: one per name, per process."""

from __future__ import annotations

import logging
import threading

from core.messaging.memory_broker.broker import Broker

SCHEME = "memory://"

log = logging.getLogger("core.messaging.memory_broker")

_brokers: dict[str, Broker] = {}
_lock = threading.Lock()


def is_memory(bootstrap_servers: str) -> bool:
    """Whether `bootstrap_servers` (`KAFKA_BOOTSTRAP_SERVERS`) names an in-memory broker."""
    return bootstrap_servers.startswith(SCHEME)


def broker_for(bootstrap_servers: str) -> Broker:
    """The broker of this process that `bootstrap_servers` names, made at its first use."""
    if not is_memory(bootstrap_servers):
        raise ValueError(f"not an in-memory broker address: {bootstrap_servers!r}")
    name = bootstrap_servers.removeprefix(SCHEME)
    with _lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = Broker(name)
            log.warning("in-memory Kafka broker %s%s: this process only, nothing is durable "
                        "(a restart loses every topic, record, group and offset)", SCHEME, name)
        return broker


def drop(bootstrap_servers: str) -> None:
    """Forget the broker `bootstrap_servers` names (tests: each its own, then gone)."""
    with _lock:
        _brokers.pop(bootstrap_servers.removeprefix(SCHEME), None)
