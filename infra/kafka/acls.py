"""The Kafka ACLs the platform needs: which principal may read, write and create which topic,
and join which consumer group. Everything not listed is denied once the broker runs an
authorizer with `allow.everyone.if.no.acl.found=false` (see docs/security.md, "Kafka ACLs").

    python infra/kafka/acls.py print             # the kafka-acls.sh commands, to review or run
    python infra/kafka/acls.py apply --bootstrap-server HOST:PORT --command-config admin.properties

Options: `--group-prefix` (the stack's KAFKA_CONSUMER_GROUP prefix, "" in production) and
`--principal SERVICE=User:NAME` (default `User:<service>`) for each service whose principal
is named otherwise. `apply` goes through the Kafka admin API (confluent-kafka), so it needs
no Kafka installation; `print` is for where kafka-acls.sh is the tool of record.

Note what ACLs cannot do: every instance writes its own heartbeats *and* the tombstones of
instances dead past the grace period, so every platform principal has Write on
`platform.registry`, and Kafka ACLs stop at the topic, not the key. What an instance
announces is believed only when signed with REGISTRY_SIGNING_KEY (core/service_registry/
trust.py); the ACLs keep everyone else from writing at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

REGISTRY = "platform.registry"
REPLIES = "replies."
SERVICES = ("auth", "user", "driver", "notification", "order", "gateway")


@dataclass(frozen=True, slots=True)
class Grant:
    """`operations` on a topic or group, named exactly (`literal`) or by prefix."""

    service: str
    resource: str  # "topic" or "group"
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


def _consumes(service: str, topics: Iterable[str]) -> list[Grant]:
    """Read a subscribed topic (created if missing), and park its dead letters."""
    grants = []
    for topic in topics:
        grants.append(Grant(service, "topic", topic, ("READ", "CREATE")))
        grants.append(Grant(service, "topic", f"{topic}.dlq", ("WRITE", "CREATE")))
    return grants


def _publishes(service: str, topics: Iterable[str]) -> list[Grant]:
    return [Grant(service, "topic", topic, ("WRITE", "CREATE")) for topic in topics]


def grants(group_prefix: str = "") -> list[Grant]:
    """Every grant, per service (Read and Write imply Describe)."""
    table: list[Grant] = []
    for service in SERVICES:
        # The registry: heartbeats, tombstones, read whole by every instance (no group; the
        # follower's group id, `<service>-<instance>-follow`, never commits).
        table.append(Grant(service, "topic", REGISTRY, ("READ", "WRITE", "CREATE")))
        table.append(Grant(service, "group", f"{service}-", ("READ",), prefixed=True))
    table += _publishes("auth", ["auth.events"])
    table += _consumes("user", ["auth.events", "user.events", "user.requests"])
    table += _publishes("user", ["user.events"])
    table += [Grant("user", "topic", REPLIES, ("WRITE",), prefixed=True),
              Grant("user", "group", f"{group_prefix}user", ("READ",)),
              Grant("user", "group", f"{group_prefix}user.cache.", ("READ",), prefixed=True)]
    table += _consumes("driver", ["driver.locations", "driver.commands"])
    # The ride saga's replies go to the topic each command names: the order service's.
    table += _publishes("driver", ["driver.events", "driver.locations", "order.saga-replies"])
    table += [Grant("driver", "group", f"{group_prefix}driver", ("READ",))]
    table += _consumes("notification", ["auth.events", "user.events", "driver.events"])
    table += _publishes("notification", ["notification.events", "user.requests"])
    table += [
        # Its request-reply client: a reply topic per instance, created, read by a group of
        # its own, and deleted at stop (or by the janitor, after a crash).
        Grant("notification", "topic", REPLIES, ("CREATE", "READ", "WRITE", "DELETE"),
              prefixed=True),
        Grant("notification", "group", REPLIES, ("READ", "DESCRIBE"), prefixed=True),
        Grant("notification", "group", f"{group_prefix}notification", ("READ",)),
    ]
    table += _consumes("order", ["order.saga-replies"])
    table += _publishes("order", ["order.events", "driver.commands"])
    table += [
        # Its projections read `order.events` from stored positions, with no group.
        Grant("order", "topic", "order.events", ("READ",)),
        Grant("order", "group", f"{group_prefix}order", ("READ",)),
    ]
    return table


def principals(overrides: Mapping[str, str]) -> dict[str, str]:
    unknown = set(overrides) - set(SERVICES)
    if unknown:
        raise SystemExit(f"no such service: {', '.join(sorted(unknown))} "
                         f"(services: {', '.join(SERVICES)})")
    return {service: overrides.get(service, f"User:{service}") for service in SERVICES}


def commands(table: Sequence[Grant], who: Mapping[str, str], bootstrap: str,
             command_config: str | None) -> list[str]:
    """The kafka-acls.sh command lines granting `table`."""
    lines = []
    config = f" --command-config {command_config}" if command_config else ""
    for grant in table:
        ops = " ".join(f"--operation {op.capitalize()}" for op in grant.operations)
        pattern = " --resource-pattern-type prefixed" if grant.prefixed else ""
        lines.append(f"kafka-acls.sh --bootstrap-server {bootstrap}{config} --add "
                     f"--allow-principal {who[grant.service]} {ops} "
                     f"--{grant.resource} '{grant.name}'{pattern}")
    return lines


def bindings(table: Sequence[Grant], who: Mapping[str, str]) -> list[object]:
    """`table` as confluent-kafka AclBindings (allowed from any host)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    unique = dict.fromkeys((grant.resource, grant.name, grant.prefixed, who[grant.service], op)
                           for grant in table for op in grant.operations)
    return [AclBinding(ResourceType[resource.upper()], name,
                       ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL,
                       principal, "*", AclOperation[op], AclPermissionType.ALLOW)
            for resource, name, prefixed, principal, op in unique]


def apply(table: Sequence[Grant], who: Mapping[str, str], config: Mapping[str, str]) -> int:
    """Create every binding through the admin API; the number created. Idempotent."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(dict(config))
    made = bindings(table, who)
    for future in admin.create_acls(made, request_timeout=30).values():  # type: ignore[arg-type]
        future.result()
    return len(made)


def _properties(path: str | None) -> dict[str, str]:
    """A Java properties file (the admin client's security settings) as librdkafka config."""
    if path is None:
        return {}
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as file:
        for raw in file:
            line = raw.strip()
            if line and not line.startswith(("#", "!")) and "=" in line:
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["print", "apply"])
    parser.add_argument("--bootstrap-server", default="127.0.0.1:9092")
    parser.add_argument("--command-config", help="admin client properties (security settings)")
    parser.add_argument("--group-prefix", default="")
    parser.add_argument("--principal", action="append", default=[], metavar="SERVICE=PRINCIPAL")
    args = parser.parse_args(argv)
    who = principals(dict(p.split("=", 1) for p in args.principal))
    table = grants(args.group_prefix)
    if args.action == "print":
        print("\n".join(commands(table, who, args.bootstrap_server, args.command_config)))
        return 0
    count = apply(table, who, {"bootstrap.servers": args.bootstrap_server,
                               **_properties(args.command_config)})
    print(f"{count} ACL bindings in place for {', '.join(sorted(set(who.values())))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
