"""`python -m examples.legacy_shop.sync --bootstrap-servers HOST:PORT --database shop.db`: feed
the shop's `products` table from the catalog service's `catalog.product_changed` events
(docs/migrating.md, step 4), so that once the catalog's path is the service's, the shop's
orders still find every product, and routing the path back to the shop loses nothing.

Run it before the route flips. At least once: a record's offset is committed after its row,
and applying an event twice writes the same row. One product's events come in order (keyed
by its id). Events the backfill published (`"source": "backfill"`) are skipped: they are the
shop's own rows, copied out; writing them back would only bump `updated_at` for nothing."""

from __future__ import annotations

import argparse
import json
import logging
import signal
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message
from sqlalchemy.orm import Session, sessionmaker

from examples.legacy_shop.db import open_database
from examples.legacy_shop.models import Product

TOPIC = "catalog.events"
EVENT_TYPE = "catalog.product_changed"

log = logging.getLogger("legacy_shop.sync")


def apply(sessions: sessionmaker[Session], data: dict[str, Any]) -> bool:
    """Write the product as the event has it; False when the row already was so."""
    values = {"sku": data["sku"], "name": data["name"], "price_cents": data["price_cents"]}
    with sessions() as db:
        product = db.get(Product, data["product_id"])
        if product is None:
            db.add(Product(id=data["product_id"], **values))
        elif all(getattr(product, key) == value for key, value in values.items()):
            return False
        else:
            for key, value in values.items():
                setattr(product, key, value)
        db.commit()
    return True


def handle(sessions: sessionmaker[Session], message: Message) -> None:
    envelope = json.loads(message.value() or b"{}")
    data = envelope.get("data") or {}
    if envelope.get("event_type") != EVENT_TYPE or data.get("source") == "backfill":
        return
    if apply(sessions, data):
        log.info("product %s: %s", data["product_id"], data)


def run(bootstrap_servers: str, database: str, group: str) -> None:
    sessions = open_database(f"sqlite:///{database}")
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.subscribe([TOPIC])
    try:
        while not stopping:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # not created yet
                    log.warning("kafka: %s", error)
                continue
            handle(sessions, message)
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.legacy_shop.sync")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--database", default="legacy_shop.db", help="the shop's SQLite file")
    parser.add_argument("--group", default="legacy-shop.catalog-sync")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(args.bootstrap_servers, args.database, args.group)


if __name__ == "__main__":
    main()
