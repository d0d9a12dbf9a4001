"""What every benchmark on a local Kafka broker shares: the broker's JVM options and the wait
for a fresh topic's leaders."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient

BENCH_JAVA_OPTS = "-XX:TieredStopAtLevel=4 -Xmx1g"
"""The dev broker runs a C1-only, small-heap JVM for fast start-up; a throughput benchmark
wants the optimizing compiler, so unless the caller chose options (`KFM_KAFKA_JAVA_OPTS`),
it gets C2 and 1 GiB."""


def wait_for_leaders(admin: AdminClient, topic: str, partitions: int,
                     timeout: float = 30.0) -> None:
    """Block until every partition of `topic` has a leader (a new topic's first produce
    would otherwise wait for the metadata inside the measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic, timeout=5).topics.get(topic)
        if (meta is not None and meta.error is None and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())):
            return
        time.sleep(0.05)
    raise RuntimeError(f"topic {topic} has no leader for every partition after {timeout}s")
