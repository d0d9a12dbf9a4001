"""Real Apache Kafka (KRaft) brokers as plain child processes, for development and tests.

A node is formatted with the official StorageTool and started with `kafka.Kafka`, exactly as
`bin/kafka-storage.sh format` and `bin/kafka-server-start.sh` would, from jars cached by
`ensure_kafka()`. Every node is broker and controller at once; ports are free loopback ports.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from devinfra.files import Workdir
from devinfra.kafka_config import (
    PropertyValue,
    Quorum,
    node_properties,
    read_cluster_id,
    write_properties,
)
from devinfra.kafka_dist import (
    BROKER_HEAP,
    TOOL_HEAP,
    ensure_kafka,
    java_command,
    publish_cds_dump,
)
from devinfra.process import (
    LOOPBACK,
    ManagedProcess,
    free_ports,
    port_accepts,
    run_checked,
    wait_until,
)
from devinfra.server import ClosedOnExit, LocalServer

__all__ = ["KafkaBroker", "KafkaCluster", "ensure_kafka"]

log = logging.getLogger("devinfra")

BROKER_TIMEOUT = 90.0
CLUSTER_TIMEOUT = 180.0
_CLEAN_EXIT_CODES = (0, 143)  # 143: the JVM's exit code after SIGTERM and a clean shutdown
_admin_log = logging.getLogger("devinfra.kafka.client")


class KafkaBroker(LocalServer):
    """One KRaft node (broker + controller). Use `start()` or `KafkaCluster.start()`.

    `stop()` ends the process but keeps its data, so `restart()` comes back on the same ports
    with the same data; `close()` also deletes a temp workdir we created.
    """

    def __init__(
        self,
        *,
        node_id: int,
        port: int,
        controller_port: int,
        quorum: Quorum,
        workdir: Workdir,
        libs: Path,
        overrides: Mapping[str, PropertyValue] | None = None,
    ) -> None:
        self.node_id = node_id
        self.port = port
        self.controller_port = controller_port
        self.quorum = quorum
        self._workdir = workdir
        self._libs = libs
        self._overrides = dict(overrides or {})
        self.startup_seconds: float | None = None
        self._cds_dump: Path | None = None
        self._process = ManagedProcess(
            f"kafka node {node_id}",
            [],
            cwd=workdir.path,
            output=self.logs_dir / "kafka.out",
            extra_logs=[self.logs_dir / "server.log"],
        )

    # --- public API -----------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        properties: Mapping[str, PropertyValue] | None = None,
        timeout: float = BROKER_TIMEOUT,
    ) -> KafkaBroker:
        """Start a single-node cluster and block until it serves metadata.

        A `workdir` that already holds a formatted node is reused (data and cluster id kept).
        """
        started = time.monotonic()
        libs = ensure_kafka()
        wd = Workdir.create(workdir, "kafka")
        client_port, controller_port = free_ports(2)
        port = port or client_port
        data_dir = wd.path / "data"
        quorum = Quorum.new({1: controller_port}, read_cluster_id(data_dir))
        broker = cls(
            node_id=1,
            port=port,
            controller_port=controller_port,
            quorum=quorum,
            workdir=wd,
            libs=libs,
            overrides=properties,
        )
        try:
            broker._format()
            broker._launch()
            broker._wait_ready({1}, timeout)
        except BaseException:
            broker.close()
            raise
        broker.startup_seconds = time.monotonic() - started
        log.info("Kafka ready at %s in %.1fs", broker.bootstrap_servers, broker.startup_seconds)
        return broker

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    def stop(self, timeout: float | None = None) -> None:
        """Shut down cleanly (SIGTERM, then SIGKILL after `timeout`); data is kept."""
        code = self._process.stop(self.STOP_TIMEOUT if timeout is None else timeout)
        self._finish_cds_dump(clean=code in _CLEAN_EXIT_CODES)

    def kill(self) -> None:
        """SIGKILL: a crash, for failover tests. Data is kept; `restart()` recovers it."""
        self._process.kill()
        self._finish_cds_dump(clean=False)

    def restart(self, timeout: float = BROKER_TIMEOUT) -> None:
        """Stop if running, start again on the same ports and data, block until ready."""
        self.stop()
        self._launch()
        self._wait_ready({self.node_id}, timeout)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"KafkaBroker(node_id={self.node_id}, {self.bootstrap_servers}, {state})"

    # --- internals ------------------------------------------------------------------------

    def _format(self) -> None:
        """Write server.properties; format the storage once (as kafka-storage.sh format)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        props = node_properties(
            node_id=self.node_id,
            port=self.port,
            controller_port=self.controller_port,
            quorum=self.quorum,
            data_dir=self.data_dir,
            overrides=self._overrides,
        )
        write_properties(self.workdir / "server.properties", props)
        if (self.data_dir / "meta.properties").is_file():
            return
        argv = [
            *java_command(self._libs, self.logs_dir, TOOL_HEAP).argv,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.quorum.cluster_id,
            "--config",
            str(self.workdir / "server.properties"),
        ]
        run_checked(argv, what=f"formatting Kafka node {self.node_id}", cwd=self.workdir)

    def _launch(self) -> None:
        java = java_command(self._libs, self.logs_dir, BROKER_HEAP, record_cds=True)
        self._cds_dump = java.cds_dump
        self._process.argv = [*java.argv, "kafka.Kafka", str(self.workdir / "server.properties")]
        self._process.start()

    def _finish_cds_dump(self, *, clean: bool) -> None:
        dump, self._cds_dump = self._cds_dump, None
        publish_cds_dump(self._libs, dump, clean=clean)

    def _wait_ready(self, expected_ids: set[int], timeout: float) -> None:
        _wait_for_brokers([self], expected_ids, self.bootstrap_servers, timeout)


class KafkaCluster(ClosedOnExit):
    """`size` KRaft nodes, each broker + controller, forming one quorum of `size` voters.

    With 3 nodes: default.replication.factor=3 and min.insync.replicas=2 (also for the offsets
    and transaction topics), so one node may be killed and acks=all produces still succeed.
    """

    def __init__(self, brokers: Sequence[KafkaBroker], workdir: Workdir) -> None:
        self.brokers = list(brokers)
        self._workdir = workdir
        self.startup_seconds: float | None = None

    @classmethod
    def start(
        cls,
        size: int = 3,
        workdir: Path | None = None,
        *,
        properties: Mapping[str, PropertyValue] | None = None,
        timeout: float = CLUSTER_TIMEOUT,
    ) -> KafkaCluster:
        """Start all nodes at once (a quorum needs a majority) and block until all serve."""
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        started = time.monotonic()
        libs = ensure_kafka()
        wd = Workdir.create(workdir, "kafka-cluster")
        ports = free_ports(2 * size)
        node_ids = list(range(1, size + 1))
        controller_ports = dict(zip(node_ids, ports[size:], strict=True))
        quorum = Quorum.new(controller_ports, read_cluster_id(wd.path / "node-1" / "data"))
        brokers = [
            KafkaBroker(
                node_id=nid,
                port=ports[nid - 1],
                controller_port=controller_ports[nid],
                quorum=quorum,
                workdir=Workdir.create(wd.path / f"node-{nid}"),
                libs=libs,
                overrides=properties,
            )
            for nid in node_ids
        ]
        cluster = cls(brokers, wd)
        try:
            with ThreadPoolExecutor(max_workers=size) as pool:
                list(pool.map(lambda b: b._format(), brokers))
            for broker in brokers:
                broker._launch()
            _wait_for_brokers(brokers, set(node_ids), cluster.bootstrap_servers, timeout)
        except BaseException:
            cluster.close()
            raise
        cluster.startup_seconds = time.monotonic() - started
        log.info("Kafka cluster of %d ready in %.1fs", size, cluster.startup_seconds)
        return cluster

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(b.bootstrap_servers for b in self.brokers)

    @property
    def workdir(self) -> Path:
        return self._workdir.path

    def broker(self, node_id: int) -> KafkaBroker:
        for candidate in self.brokers:
            if candidate.node_id == node_id:
                return candidate
        raise KeyError(f"no node {node_id} in this cluster")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop all nodes in parallel (one at a time would make the last wait for a quorum)."""
        with ThreadPoolExecutor(max_workers=len(self.brokers)) as pool:
            list(pool.map(lambda b: b.stop(timeout), self.brokers))

    def ensure_running(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Start every node that is down, all at once (a quorum may need several back), and
        block until all nodes serve. A no-op when all are running."""
        down = [b for b in self.brokers if not b.running]
        if not down:
            return
        for broker in down:
            broker._launch()
        ids = {b.node_id for b in self.brokers}
        _wait_for_brokers(self.brokers, ids, self.bootstrap_servers, timeout)

    def close(self) -> None:
        """Stop all nodes and delete the workdir if it is a temp dir we created.

        The grace period is short: with every voter leaving at once, the Raft leader waits 5s
        for followers that are already gone, and the data is about to be deleted anyway.
        """
        self.stop(timeout=2.0)
        self._workdir.remove()

    def __repr__(self) -> str:
        return f"KafkaCluster({self.brokers!r})"


def _wait_for_brokers(
    brokers: Sequence[KafkaBroker], expected_ids: set[int], bootstrap: str, timeout: float
) -> None:
    """Ready means: each node's port accepts, then metadata (via `bootstrap`) lists every id.

    Metadata lists only registered, unfenced brokers, so a listed broker can lead partitions.
    """
    deadline = time.monotonic() + timeout
    processes = [b._process for b in brokers]
    for broker in brokers:
        wait_until(
            functools.partial(port_accepts, broker.port),
            timeout=max(0.0, deadline - time.monotonic()),
            what=f"Kafka node {broker.node_id} on {broker.bootstrap_servers}",
            processes=processes,
        )
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _admin_log}
    admin = AdminClient(conf)
    wait_until(
        lambda: expected_ids <= _listed_broker_ids(admin),
        timeout=max(0.0, deadline - time.monotonic()),
        what=f"Kafka metadata from {bootstrap} listing brokers {sorted(expected_ids)}",
        processes=processes,
        interval=0.2,
    )


def _listed_broker_ids(admin: AdminClient) -> set[int]:
    with contextlib.suppress(KafkaException):
        return set(admin.list_topics(timeout=2.0).brokers)
    return set()
