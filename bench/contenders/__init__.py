"""The four contenders, in table order: (a) is ours, the rest are what it is measured against."""

from __future__ import annotations

from bench.contenders.aiokafka_raw import AiokafkaContender
from bench.contenders.base import Contender, OnMessage
from bench.contenders.confluent_raw import ConfluentContender
from bench.contenders.core_bus import CoreContender
from bench.contenders.faststream_kafka import FastStreamContender

CORE = "core"
FRAMEWORK = "faststream"
RAW = ("aiokafka", "confluent")


def all_contenders(bootstrap_servers: str, payload_size: int) -> list[Contender]:
    return [
        CoreContender(bootstrap_servers, payload_size),
        FastStreamContender(bootstrap_servers, payload_size),
        AiokafkaContender(bootstrap_servers, payload_size),
        ConfluentContender(bootstrap_servers, payload_size),
    ]


__all__ = ["CORE", "FRAMEWORK", "RAW", "Contender", "OnMessage", "all_contenders"]
