"""server.properties for a throwaway KRaft node, tuned for a small (2-core) test machine."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devinfra.process import LOOPBACK

PropertyValue = str | int | bool


@dataclass(frozen=True)
class Quorum:
    """What every node of one KRaft cluster shares: its id and the static controller voters."""

    cluster_id: str
    voters: str  # "1@127.0.0.1:p1,2@127.0.0.1:p2,..."
    size: int

    @classmethod
    def new(cls, controller_ports: Mapping[int, int], cluster_id: str | None = None) -> Quorum:
        voters = ",".join(f"{nid}@{LOOPBACK}:{port}" for nid, port in controller_ports.items())
        return cls(cluster_id or new_cluster_id(), voters, len(controller_ports))


def new_cluster_id() -> str:
    """A Kafka cluster id as `kafka-storage.sh random-uuid` makes it (22 chars, base64url)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka rejects ids that would look like a CLI flag
            return text


def read_cluster_id(data_dir: Path) -> str | None:
    """The cluster id of an already formatted data dir, so a kept workdir is reused as is."""
    meta = data_dir / "meta.properties"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


def node_properties(
    *,
    node_id: int,
    port: int,
    controller_port: int,
    quorum: Quorum,
    data_dir: Path,
    overrides: Mapping[str, PropertyValue] | None = None,
) -> dict[str, str]:
    """Combined broker+controller settings; replication follows the cluster size (max 3)."""
    rf = min(quorum.size, 3)
    min_isr = 2 if rf >= 3 else 1
    props: dict[str, PropertyValue] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": quorum.voters,
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # Topics are created on purpose, as in production: a client that writes to or reads a
        # topic nobody created fails here too, instead of getting a broker-default topic.
        "auto.create.topics.enable": False,
        # Internal topics: replicated across the cluster, few partitions (fast to create on
        # 2 cores; 50 partitions per internal topic is the production default).
        "num.partitions": 1,
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": quorum.size,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": quorum.size,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        # Tests want groups to form at once and consumers to be allowed short sessions.
        "group.initial.rebalance.delay.ms": 0,
        "group.min.session.timeout.ms": 1000,
        # A killed node is fenced (and loses its leaderships) after 4s instead of 9s.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 4000,
        # Throwaway data: short retention, small segments so retention can act.
        "log.retention.hours": 1,
        "log.retention.check.interval.ms": 60000,
        "log.segment.bytes": 16 * 1024 * 1024,
        # Fewer threads than the defaults sized for big servers.
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
    }
    props.update(overrides or {})
    return {key: _render(value) for key, value in props.items()}


def write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))


def _render(value: PropertyValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
