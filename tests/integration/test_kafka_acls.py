"""The platform's Kafka ACLs (infra/kafka/acls.py) on a real broker that authenticates clients
(SASL/PLAIN) and denies what no ACL allows: applied with the script, they let each service do
its part (the registry, read and written by the gateway and auth; auth's events) and nothing
else; a principal the platform does not know cannot write to the registry at all."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from pydantic import SecretStr

from core.config import KafkaConfig, Settings
from core.messaging.kafka_client import KafkaAdmin
from core.service_registry import Instance
from core.service_registry.kafka import kafka_registry
from core.service_registry.trust import RecordTrust
from devinfra.files import Workdir
from devinfra.kafka import KafkaBroker
from devinfra.kafka_config import Quorum, read_cluster_id
from devinfra.kafka_dist import ensure_kafka
from devinfra.process import LOOPBACK, free_ports
from tests.helpers import eventually, unique

ROOT = Path(__file__).resolve().parents[2]
USERS = {name: secrets.token_hex(8) for name in
         ("admin", "auth", "user", "driver", "notification", "gateway", "rogue")}
TTL, BEAT, GRACE = 6.0, 1.0, 60.0


def _acls() -> ModuleType:
    spec = importlib.util.spec_from_file_location("acls", ROOT / "infra/kafka/acls.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["acls"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class SaslBroker:
    """A single-node broker with a SASL/PLAIN listener for the principals in USERS (the
    plaintext one, for the fixture's own readiness check, is a super user)."""

    def __init__(self) -> None:
        port, controller, self.sasl_port = free_ports(3)
        jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="admin" password="{USERS["admin"]}" '
                + " ".join(f'user_{u}="{p}"' for u, p in USERS.items()) + ";")
        workdir = Workdir.create(None, "kafka-sasl")
        self.broker = KafkaBroker(
            node_id=1, port=port, controller_port=controller,
            quorum=Quorum.new({1: controller}, read_cluster_id(workdir.path / "data")),
            workdir=workdir, libs=ensure_kafka(), overrides={
                "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:"
                             f"{controller},SASL://{LOOPBACK}:{self.sasl_port}",
                "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port},"
                                        f"SASL://{LOOPBACK}:{self.sasl_port}",
                "listener.security.protocol.map":
                    "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL:SASL_PLAINTEXT",
                "sasl.enabled.mechanisms": "PLAIN",
                "listener.name.sasl.plain.sasl.jaas.config": jaas,
                "authorizer.class.name":
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": "User:ANONYMOUS;User:admin",
                "allow.everyone.if.no.acl.found": False,
            })
        self.broker._format()
        self.broker._launch()
        self.broker._wait_ready({1}, 120)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.sasl_port}"

    def config(self, user: str) -> KafkaConfig:
        """What a service running as `user` connects with (from its settings, as in a
        deployment)."""
        settings = Settings(kafka_bootstrap_servers=self.bootstrap, service_name=user,
                            kafka_security_protocol="SASL_PLAINTEXT",
                            kafka_sasl_mechanism="PLAIN", kafka_sasl_username=user,
                            kafka_sasl_password=SecretStr(USERS[user]))
        return settings.kafka()


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[SaslBroker]:
    broker = SaslBroker()
    try:
        yield broker
    finally:
        broker.broker.close()


def _denied(config: KafkaConfig, topic: str) -> bool:
    error = _write(config, topic)
    return error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def _write(config: KafkaConfig, topic: str) -> KafkaError | None:
    producer = Producer({"bootstrap.servers": config.bootstrap_servers,
                         "message.timeout.ms": 10000, **config.extra})
    errors: list[KafkaError | None] = []
    producer.produce(topic, b"{}", b"key", on_delivery=lambda e, _m: errors.append(e))
    producer.flush(15)
    return errors[0] if errors else KafkaError(KafkaError._TIMED_OUT)


async def test_the_platform_acls_let_each_service_do_its_part_and_no_one_else(
        sasl_broker: SaslBroker, tmp_path: Path) -> None:
    acls = _acls()
    admin = tmp_path / "admin.properties"
    admin.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                     f"sasl.username=admin\nsasl.password={USERS['admin']}\n")
    assert acls.main(["apply", "--bootstrap-server", sasl_broker.bootstrap,
                      "--command-config", str(admin)]) == 0

    trust = RecordTrust([b"k" * 32], ttl=TTL)
    auth = kafka_registry(sasl_broker.config("auth"), ttl=TTL, heartbeat_interval=BEAT,
                          grace=GRACE, trust=trust)
    gateway = kafka_registry(sasl_broker.config("gateway"), ttl=TTL, heartbeat_interval=BEAT,
                             grace=GRACE, trust=RecordTrust([b"k" * 32], ttl=TTL))
    await auth.start()  # creates platform.registry, as its ACLs allow
    await gateway.start()
    try:
        me = Instance("auth", unique("auth"), "http://127.0.0.1:9101")
        await auth.register(me)
        assert await eventually(lambda: gateway.discover("auth"), timeout=30) == [me]

        rogue = sasl_broker.config("rogue")
        assert _denied(rogue, "platform.registry")
        await KafkaAdmin(sasl_broker.config("auth")).create_topics(["auth.events"])
        assert _write(sasl_broker.config("auth"), "auth.events") is None
        assert _denied(sasl_broker.config("driver"), "auth.events")
        assert _denied(sasl_broker.config("gateway"), "auth.events")
    finally:
        await auth.stop()
        await gateway.stop()


def test_the_printed_commands_name_every_grant() -> None:
    acls = _acls()
    lines: list[Any] = acls.commands(acls.grants("t1_"), acls.principals(
        {"auth": "User:CN=auth"}), "kafka:9093", "admin.properties")
    assert len(lines) == len(acls.grants())
    assert ("kafka-acls.sh --bootstrap-server kafka:9093 --command-config admin.properties "
            "--add --allow-principal User:CN=auth --operation Read --operation Write "
            "--operation Create --topic 'platform.registry'") in lines
    assert any("--group 't1_user.cache.' --resource-pattern-type prefixed" in line
               for line in lines)
    with pytest.raises(SystemExit, match="no such service: orders"):
        acls.principals({"orders": "User:orders"})
