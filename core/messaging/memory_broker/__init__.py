"""An in-process Kafka broker: `KAFKA_BOOTSTRAP_SERVERS=memory://NAME` (`make up MODE=monolith
BUS=memory`, for a laptop without Java).

Single process only, and not durable: every service that shares the broker must run in the
process that holds it (the monolith), and stopping that process loses every topic, record,
consumer group and committed offset (said in a warning when the broker is made).

What it keeps: topics of partitions with offsets, keys hashed to partitions as librdkafka's
default partitioner does (CRC-32), consumer groups whose members share every partition of
their topics with revoke/assign callbacks (cooperative: revoked, committed, then assigned),
committed offsets that outlive members, pause/resume, end offsets, topic creation, listing and
deletion, reads of a whole topic outside any group (the registry's follower), and compaction
of `cleanup.policy=compact` topics at each write (a key's earlier record is dropped, its offset
left empty). What it does not: retention (other topics keep every record while the process
lives), transactions, sessions (a member is out only when it closes, so `on_lost` is never
called), ACLs.

It stands in for confluent-kafka's clients underneath `core.messaging.kafka_client`
(`core.messaging.kafka_client._clients` picks one by address), so everything built on those
wrappers runs over it unchanged.
"""

from core.messaging.memory_broker.admin import MemoryAdmin
from core.messaging.memory_broker.broker import Broker, Message, partition_for
from core.messaging.memory_broker.consumer import MemoryConsumer
from core.messaging.memory_broker.producer import MemoryProducer
from core.messaging.memory_broker.registry import SCHEME, broker_for, drop, is_memory

__all__ = [
    "SCHEME",
    "Broker",
    "MemoryAdmin",
    "MemoryConsumer",
    "MemoryProducer",
    "Message",
    "broker_for",
    "drop",
    "is_memory",
    "partition_for",
]
