"""Dead letters: records that could not be handled, parked on `<topic>.dlq` with the reason.

The dead-letter record keeps the original key, value and headers and adds `dlq.*` headers
(error, error type, attempts, handlers, origin, consumer group, time), so an operator can see
why it failed and replay it to its original topic once the cause is fixed. Replay progress is
a consumer-group offset on the DLQ topic, so a record is replayed once unless asked again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from core.config import KafkaConfig
from core.messaging.kafka_client import KafkaProducer, commit_offsets, committed_offsets, read_topic
from core.messaging.types import Headers, Record

DLQ_SUFFIX = ".dlq"
H_ERROR = "dlq.error"
H_ERROR_TYPE = "dlq.error_type"
H_ATTEMPTS = "dlq.attempts"
H_HANDLERS = "dlq.handlers"
H_TOPIC = "dlq.original_topic"
H_PARTITION = "dlq.original_partition"
H_OFFSET = "dlq.original_offset"
H_GROUP = "dlq.consumer_group"
H_FAILED_AT = "dlq.failed_at"
H_REPLAYED_FROM = "dlq.replayed_from"
MAX_ERROR_BYTES = 4000


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


def replay_group(topic: str) -> str:
    return f"{dlq_topic(topic)}.replayer"


def dead_letter_headers(
    record: Record,
    error: BaseException,
    attempts: int,
    handlers: Sequence[str],
    group: str,
) -> Headers:
    """The original headers (minus earlier `dlq.*` ones) plus why and where it failed."""
    message = f"{error}"[:MAX_ERROR_BYTES] or type(error).__name__
    extra = {
        H_ERROR: message,
        H_ERROR_TYPE: f"{type(error).__module__}.{type(error).__qualname__}",
        H_ATTEMPTS: str(attempts),
        H_HANDLERS: ",".join(handlers),
        H_TOPIC: record.topic,
        H_PARTITION: str(record.partition),
        H_OFFSET: str(record.offset),
        H_GROUP: group,
        H_FAILED_AT: str(int(time.time() * 1000)),
    }
    kept = [(k, v) for k, v in record.headers if not k.startswith("dlq.")]
    return kept + [(k, v.encode()) for k, v in extra.items()]


class DeadLetterSink(Protocol):
    """Where records that cannot be handled go. `send` returns once the record is durable;
    it raises rather than lose one, and the caller keeps the original uncommitted."""

    async def send(self, record: Record, headers: Headers) -> None: ...


class KafkaDeadLetterSink:
    """Produces dead letters to `<topic>.dlq`, keyed like the original."""

    def __init__(self, producer: KafkaProducer) -> None:
        self._producer = producer

    async def send(self, record: Record, headers: Headers) -> None:
        await self._producer.produce(dlq_topic(record.topic), record.value, record.key, headers)


class InMemoryDeadLetterSink:
    """Keeps dead letters in a list, for unit tests of handlers."""

    def __init__(self) -> None:
        self.records: list[tuple[Record, Headers]] = []

    async def send(self, record: Record, headers: Headers) -> None:
        self.records.append((record, headers))


@dataclass(frozen=True)
class DeadLetter:
    """A dead-letter record as an operator sees it. Type and id come from the headers, or
    from the JSON body when a producer did not set them."""

    record: Record
    replayed: bool

    @property
    def original_topic(self) -> str:
        return self.record.header(H_TOPIC) or self.record.topic.removesuffix(DLQ_SUFFIX)

    @property
    def error(self) -> str:
        return self.record.header(H_ERROR) or ""

    @property
    def error_type(self) -> str:
        return self.record.header(H_ERROR_TYPE) or ""

    @property
    def attempts(self) -> int:
        return int(self.record.header(H_ATTEMPTS) or 0)

    @property
    def event_type(self) -> str | None:
        return self.record.header("event_type") or self._body_field("event_type")

    @property
    def event_id(self) -> str | None:
        return self.record.header("event_id") or self._body_field("event_id")

    @cached_property
    def _body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.record.value or b"")
        except ValueError:  # not JSON (or not UTF-8): that may be why it is here
            return {}
        return body if isinstance(body, dict) else {}

    def _body_field(self, name: str) -> str | None:
        value = self._body.get(name)
        return None if value is None else str(value)

    def as_dict(self) -> dict[str, Any]:
        """What `dlq list --json` prints for this letter."""
        r = self.record
        return {
            "partition": r.partition, "offset": r.offset,
            "key": r.key.decode("utf-8", "replace") if r.key is not None else None,
            "original_topic": self.original_topic, "event_type": self.event_type,
            "event_id": self.event_id, "attempts": self.attempts, "error": self.error,
            "error_type": self.error_type, "failed_at_ms": _int(r.header(H_FAILED_AT)),
            "consumer_group": r.header(H_GROUP), "replayed": self.replayed,
        }


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


async def list_dead_letters(config: KafkaConfig, topic: str) -> list[DeadLetter]:
    """Every dead letter of `topic` (the original topic's name), marked replayed or not."""
    records = await read_topic(config, dlq_topic(topic))
    done = await committed_offsets(config, replay_group(topic), dlq_topic(topic))
    return [DeadLetter(r, r.offset < done.get(r.partition, 0)) for r in records]


async def replay(
    config: KafkaConfig,
    producer: KafkaProducer,
    topic: str,
    *,
    offsets: Iterable[tuple[int, int]] | None = None,
    include_replayed: bool = False,
) -> list[DeadLetter]:
    """Re-produce dead letters to their original topic; returns what was replayed.

    By default, every dead letter not replayed before; `offsets` picks (partition, offset)
    pairs of the DLQ topic. Idempotent handlers make a second replay harmless.
    """
    wanted = set(offsets) if offsets is not None else None
    letters = [
        letter for letter in await list_dead_letters(config, topic)
        if (wanted is None or (letter.record.partition, letter.record.offset) in wanted)
        and (include_replayed or wanted is not None or not letter.replayed)
    ]
    advanced: dict[int, int] = {}
    for letter in letters:
        r = letter.record
        headers = [(k, v) for k, v in r.headers if not k.startswith("dlq.")]
        headers.append((H_REPLAYED_FROM, f"{r.topic}/{r.partition}/{r.offset}".encode()))
        await producer.produce(letter.original_topic, r.value, r.key, headers)
        advanced[r.partition] = max(advanced.get(r.partition, 0), r.offset + 1)
    if advanced and wanted is None:  # an explicit pick leaves the marker where it was
        await commit_offsets(config, replay_group(topic), dlq_topic(topic), advanced)
    return letters
