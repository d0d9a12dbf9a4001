"""The throwaway servers are real: Kafka stores, replicates and survives restarts; PostgreSQL and
Redis answer queries; the CLI serves until told to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis as redis_client
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devinfra.kafka import KafkaBroker, KafkaCluster, ensure_kafka
from devinfra.postgres import PostgresServer
from devinfra.process import DevInfraError
from devinfra.redis import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create_topic(bootstrap: str, topic: str, partitions: int = 1, rf: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, rf)], operation_timeout=30)
    futures[topic].result(timeout=60)


def _produce(bootstrap: str, topic: str, values: list[str]) -> None:
    """Produce with acks=all and fail unless every record is acknowledged."""
    errors: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for value in values:
        producer.produce(
            topic,
            value.encode(),
            on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
        )
    assert producer.flush(60) == 0, "records still unacknowledged after 60s"
    assert errors == []


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": _name("group"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            values.append(msg.value().decode())
    finally:
        consumer.close()
    return values


def _partition_leader(bootstrap: str, topic: str) -> tuple[int, list[int]]:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    partition = meta.topics[topic].partitions[0]
    return int(partition.leader), list(partition.isrs)


# --- Kafka: distribution ---------------------------------------------------------------------


def test_ensure_kafka_returns_the_cached_broker_classpath() -> None:
    libs = ensure_kafka()
    jars = {p.name for p in libs.glob("*.jar")}
    assert any(name.startswith("kafka_2.13-4.") for name in jars)
    assert any(name.startswith("log4j-slf4j-impl-") for name in jars)
    started = time.monotonic()
    assert ensure_kafka() == libs
    assert time.monotonic() - started < 1.0, "a cached distribution must not be resolved again"


def test_concurrent_first_resolution_happens_once(tmp_path: Path) -> None:
    """Two processes racing on an empty cache: the lock makes the second reuse the first's."""
    script = (
        "import os, sys; from devinfra.kafka import ensure_kafka; libs = ensure_kafka();"
        "print(os.stat(libs).st_ino, len(list(libs.glob('*.jar'))))"
    )
    env = {**os.environ, "KFM_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert outputs[0] == outputs[1]  # same directory inode: nobody replaced the other's jars
    assert int(outputs[0][1]) > 20


# --- Kafka: single broker --------------------------------------------------------------------


def test_broker_creates_topics_and_round_trips_records(kafka: KafkaBroker) -> None:
    topic = _name("roundtrip")
    _create_topic(kafka.bootstrap_servers, topic, partitions=3)
    sent = [f"record-{i}" for i in range(50)]
    _produce(kafka.bootstrap_servers, topic, sent)
    assert sorted(_consume(kafka.bootstrap_servers, topic, len(sent))) == sorted(sent)


def test_broker_does_not_create_topics_on_first_produce(kafka: KafkaBroker) -> None:
    """As in production: a record for a topic nobody created is refused, not a new topic."""
    topic = _name("auto")
    errors: list[str] = []
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers,
                         "message.timeout.ms": 5000})
    producer.produce(topic, b"hello", on_delivery=lambda err, _msg: errors.append(str(err)))
    producer.flush(30)
    assert errors and errors[0] != "None", "the record was acknowledged"
    meta = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10)
    assert topic not in meta.topics


def test_restart_keeps_data_and_address(kafka: KafkaBroker) -> None:
    topic = _name("durable")
    _create_topic(kafka.bootstrap_servers, topic)
    _produce(kafka.bootstrap_servers, topic, ["before-restart"])
    address = kafka.bootstrap_servers
    kafka.restart()
    assert kafka.bootstrap_servers == address
    _produce(kafka.bootstrap_servers, topic, ["after-restart"])
    assert _consume(kafka.bootstrap_servers, topic, 2) == ["before-restart", "after-restart"]


def test_killed_broker_recovers_acknowledged_records(kafka: KafkaBroker) -> None:
    topic = _name("crash")
    _create_topic(kafka.bootstrap_servers, topic)
    _produce(kafka.bootstrap_servers, topic, [f"r{i}" for i in range(20)])
    kafka.kill()
    assert not kafka.running
    kafka.restart()
    assert _consume(kafka.bootstrap_servers, topic, 20) == [f"r{i}" for i in range(20)]


def test_kept_workdir_is_reused_with_its_data(tmp_path: Path) -> None:
    topic = _name("kept")
    with KafkaBroker.start(tmp_path / "kafka") as broker:
        _create_topic(broker.bootstrap_servers, topic)
        _produce(broker.bootstrap_servers, topic, ["kept"])
    assert (tmp_path / "kafka" / "data" / "meta.properties").is_file()  # caller's dir stays
    with KafkaBroker.start(tmp_path / "kafka") as broker:
        assert _consume(broker.bootstrap_servers, topic, 1) == ["kept"]


def test_a_broker_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(DevInfraError) as failure:
        KafkaBroker.start(tmp_path / "bad", properties={"num.io.threads": 0}, timeout=60)
    assert "num.io.threads" in str(failure.value)


# --- Kafka: three-node cluster ---------------------------------------------------------------


def test_cluster_replicates_and_survives_a_killed_leader(kafka_cluster: KafkaCluster) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    assert len(kafka_cluster.brokers) == 3
    topic = _name("replicated")
    _create_topic(bootstrap, topic, partitions=1, rf=3)
    _produce(bootstrap, topic, [f"a{i}" for i in range(50)])
    leader, isr = _partition_leader(bootstrap, topic)
    assert sorted(isr) == [1, 2, 3]

    kafka_cluster.broker(leader).kill()
    # min.insync.replicas=2: with 2 of 3 alive, acks=all still succeeds once a new leader leads.
    _produce(bootstrap, topic, [f"b{i}" for i in range(50)])
    new_leader, _ = _partition_leader(bootstrap, topic)
    assert new_leader != leader
    expected = [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)]
    assert _consume(bootstrap, topic, 100) == expected

    kafka_cluster.broker(leader).restart()
    assert _consume(kafka_cluster.broker(leader).bootstrap_servers, topic, 100) == expected


def test_cluster_internal_topics_are_replicated(kafka_cluster: KafkaCluster) -> None:
    """Consumer offsets survive a node loss because __consumer_offsets has RF 3 here."""
    bootstrap = kafka_cluster.bootstrap_servers
    topic = _name("offsets")
    _create_topic(bootstrap, topic, rf=3)
    _produce(bootstrap, topic, ["x"])
    assert _consume(bootstrap, topic, 1) == ["x"]
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    offsets = meta.topics["__consumer_offsets"]
    assert all(len(p.replicas) == 3 for p in offsets.partitions.values())


def test_cluster_comes_back_after_losing_its_quorum(kafka_cluster: KafkaCluster) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = _name("quorum")
    _create_topic(bootstrap, topic, partitions=1, rf=3)
    _produce(bootstrap, topic, ["before"])
    kafka_cluster.broker(1).kill()
    kafka_cluster.broker(2).kill()  # 1 of 3 voters left: no quorum, no writes
    kafka_cluster.ensure_running()
    assert all(broker.running for broker in kafka_cluster.brokers)
    _produce(bootstrap, topic, ["after"])
    assert _consume(bootstrap, topic, 2) == ["before", "after"]


# --- PostgreSQL and Redis --------------------------------------------------------------------


async def test_postgres_accepts_connections_and_queries(postgres: PostgresServer) -> None:
    assert postgres.url.startswith("postgresql+asyncpg://")
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS probe (id serial PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO probe (note) VALUES ($1)", "hello")
        assert await conn.fetchval("SELECT note FROM probe ORDER BY id DESC LIMIT 1") == "hello"
        assert await conn.fetchval("SELECT current_database()") == postgres.database
    finally:
        await conn.close()


async def test_postgres_survives_a_crash(postgres: PostgresServer) -> None:
    table = _name("crash").replace("-", "_")
    conn = await asyncpg.connect(postgres.dsn)
    await conn.execute(f"CREATE TABLE {table} (v int)")
    await conn.execute(f"INSERT INTO {table} VALUES (42)")
    await conn.close()
    postgres.kill()
    postgres.restart()
    conn = await asyncpg.connect(postgres.dsn)
    try:
        assert await conn.fetchval(f"SELECT v FROM {table}") == 42
    finally:
        await conn.close()


def test_redis_answers(redis: RedisServer) -> None:
    client = redis_client.Redis.from_url(redis.url)
    try:
        assert client.ping() is True
        client.set("devinfra:probe", "1")
        assert client.get("devinfra:probe") == b"1"
        assert client.config_get("save") == {"save": ""}  # no persistence
    finally:
        client.close()


def test_servers_die_with_their_parent_and_leave_no_temp_dir(tmp_path: Path) -> None:
    """A SIGKILLed test run leaves no server running, and its temp dir is swept later."""
    script = (
        "import os; from devinfra.redis import RedisServer; r = RedisServer.start();"
        "print(r._process.pid, r.workdir, flush=True); os.kill(os.getpid(), 9)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    pid_text, workdir = result.stdout.split()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid_text}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid_text}").exists(), "redis-server outlived its parent"
    # No check that the orphan dir still exists here: any server started meanwhile by another
    # process on this machine (a second test run, a benchmark) sweeps it first, legitimately.
    with RedisServer.start():  # any new temp workdir sweeps orphans first
        assert not Path(workdir).exists()


# --- CLI -------------------------------------------------------------------------------------


def test_cli_serves_kafka_until_sigterm(tmp_path: Path) -> None:
    address_file = tmp_path / "kafka.address"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devinfra", "kafka", "--port", "0", "--address-file", address_file],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not address_file.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no address file after 120s"
            time.sleep(0.2)
        bootstrap = address_file.read_text().strip()
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert len(meta.brokers) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.strip() == f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}"
    assert not address_file.exists(), "the address file must not outlive the broker"
    assert "stopping kafka" in stderr


def test_cli_fetch_reports_the_distribution() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devinfra", "fetch"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert str(ensure_kafka()) in result.stdout


def test_make_up_runs_the_stack_for_a_bounded_time(tmp_path: Path) -> None:
    """What `make up` runs, with its own Kafka and stand-in services (tests/e2e/procs): every
    service ready, the summary with the admin login, then a clean stop after --duration."""
    result = subprocess.run(
        [sys.executable, "-m", "devinfra.stack", "--services", "tests.e2e.procs.standins:SERVICES",
         "--base-port", "0", "--state-dir", str(tmp_path), "--duration", "3"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=240,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "kafka ready at 127.0.0.1:" in out
    for name in ("auth", "user", "driver", "notification"):
        assert f"{name} ready at http://127.0.0.1:" in out, out[-3000:]
        assert f"{name} │ standin {name} stopped cleanly" in out, out[-3000:]
    assert "log in:" in out and (tmp_path / "admin.txt").is_file()
    assert (tmp_path / "kafka" / "data" / "meta.properties").is_file()  # kept in the state dir
    assert out.rstrip().endswith("stopped")

