"""The only package that imports the Kafka client library (confluent-kafka, i.e. librdkafka).

Why confluent-kafka: `make bench` measures it against aiokafka and FastStream on the same
broker; librdkafka batches, compresses and retries in C threads, so the asyncio loop only pays
for handing records over. Each wrapper here turns librdkafka's threads and callbacks into
awaitables without blocking the event loop:

- `KafkaProducer`: one background thread serves delivery reports; `produce()` returns once
  the broker acknowledged the record (idempotent producer, `acks=all`); `stop()` leaves no
  caller waiting.
- `KafkaConsumer`: every call runs on one dedicated thread, because a librdkafka consumer
  must not be driven from two threads at once; rebalance callbacks run on that thread too.
- `TopicFollower`: a whole topic from its beginning, outside any group (compacted state).
- `KafkaAdmin`: topic creation and inspection.
- `GroupInspector`: a group's committed offsets and partition ends, read from outside it.

A `memory://NAME` address runs every wrapper over the in-process broker of
`core.messaging.memory_broker` instead (`_clients` picks, by address; one process only).
"""

from core.messaging.kafka_client._common import (
    RDKAFKA_LOG,
    AssignCallback,
    DeliveryReport,
    LostCallback,
    RevokeCallback,
    TopicPartitionKey,
)
from core.messaging.kafka_client.admin import KafkaAdmin
from core.messaging.kafka_client.consumer import SESSION_TIMEOUT_MS, KafkaConsumer
from core.messaging.kafka_client.errors import _permanent, _publish_error
from core.messaging.kafka_client.follower import TopicFollower
from core.messaging.kafka_client.inspector import GroupInspector
from core.messaging.kafka_client.producer import KafkaProducer
from core.messaging.kafka_client.tools import (
    commit_offsets,
    committed_offsets,
    group_lag,
    group_member_counts,
    read_topic,
)

__all__ = [
    "RDKAFKA_LOG",
    "SESSION_TIMEOUT_MS",
    "AssignCallback",
    "DeliveryReport",
    "GroupInspector",
    "KafkaAdmin",
    "KafkaConsumer",
    "KafkaProducer",
    "LostCallback",
    "RevokeCallback",
    "TopicFollower",
    "TopicPartitionKey",
    "_permanent",
    "_publish_error",
    "commit_offsets",
    "committed_offsets",
    "group_lag",
    "group_member_counts",
    "read_topic",
]
