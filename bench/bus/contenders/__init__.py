"""The five contenders, in table order: core (ours), then what it is measured against: typed
raw (the floor: a raw client plus the pydantic work every typed framework does), FastStream
(the other framework), and the raw clients aiokafka and confluent-kafka.

The contenders' modules are imported when they are built, not with the package: their
clients (FastStream, aiokafka) are in the `bench` dependency group, which the test suite
does not install, while the tests of the bench's bookkeeping import the names below."""

from __future__ import annotations

from bench.bus.contenders.base import Contender, OnMessage

CORE = "core"
TYPED = "typed"
FRAMEWORK = "faststream"
RAW = ("aiokafka", "confluent")


def all_contenders(bootstrap_servers: str, payload_size: int) -> list[Contender]:
    from bench.bus.contenders.aiokafka_raw import AiokafkaContender
    from bench.bus.contenders.confluent_raw import ConfluentContender
    from bench.bus.contenders.core_bus import CoreContender
    from bench.bus.contenders.faststream_kafka import FastStreamContender
    from bench.bus.contenders.typed_raw import TypedRawContender

    return [
        CoreContender(bootstrap_servers, payload_size),
        TypedRawContender(bootstrap_servers, payload_size),
        FastStreamContender(bootstrap_servers, payload_size),
        AiokafkaContender(bootstrap_servers, payload_size),
        ConfluentContender(bootstrap_servers, payload_size),
    ]


__all__ = ["CORE", "FRAMEWORK", "RAW", "TYPED", "Contender", "OnMessage", "all_contenders"]
