"""The five contenders, in table order: (a) is ours, the rest are what it is measured against:
(b) the typed floor (raw client plus the pydantic work every typed framework does), (c) the
other framework, (d, e) the raw clients."""

from __future__ import annotations

from bench.contenders.aiokafka_raw import AiokafkaContender
from bench.contenders.base import Contender, OnMessage
from bench.contenders.confluent_raw import ConfluentContender
from bench.contenders.core_bus import CoreContender
from bench.contenders.faststream_kafka import FastStreamContender
from bench.contenders.typed_raw import TypedRawContender

CORE = "core"
TYPED = "typed"
FRAMEWORK = "faststream"
RAW = ("aiokafka", "confluent")


def all_contenders(bootstrap_servers: str, payload_size: int) -> list[Contender]:
    return [
        CoreContender(bootstrap_servers, payload_size),
        TypedRawContender(bootstrap_servers, payload_size),
        FastStreamContender(bootstrap_servers, payload_size),
        AiokafkaContender(bootstrap_servers, payload_size),
        ConfluentContender(bootstrap_servers, payload_size),
    ]


__all__ = ["CORE", "FRAMEWORK", "RAW", "TYPED", "Contender", "OnMessage", "all_contenders"]
