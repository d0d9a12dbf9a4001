"""Typed raw: raw confluent-kafka plus only the typed work a framework cannot avoid.

Per record, publishing builds the same `BenchEvent` the core bus sends (envelope id and
timestamp included) and serializes it with pydantic-core straight to bytes; consuming
validates the bytes back into a `BenchEvent`. No headers, no dispatch, no offset tracking:
everything else is the raw confluent contender, so core's ratio to this is the part of its
cost that a framework could still remove.
"""

from __future__ import annotations

from bench.bus.contenders.confluent_raw import ConfluentContender
from bench.common.payload import BenchEvent, Payload, now_ns


class TypedRawContender(ConfluentContender):
    key = "typed"
    label = "typed raw"
    notes = ("the confluent contender, but each record is a BenchEvent: built and "
             "serialized with __pydantic_serializer__.to_json on publish, "
             "model_validate_json on consume; nothing else")

    def encode(self, seq: int) -> bytes:
        event = BenchEvent(data=Payload(seq=seq, sent_ns=now_ns(), blob=self._blob))
        return BenchEvent.__pydantic_serializer__.to_json(event)

    def decode(self, value: bytes | None) -> tuple[int, int]:
        data = BenchEvent.model_validate_json(value or b"").data
        return data.seq, data.sent_ns
