"""The one payload every contender sends: a sequence number, a send timestamp and a blob.

Raw clients send it as compact JSON bytes and decode it with `json.loads`; FastStream sends
the pydantic model (it serializes it to the same JSON); the core bus sends it as the `data` of
a real integration event, so the envelope and headers it adds are part of what is measured.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel

from core.messaging.events import IntegrationEvent


class Payload(BaseModel):
    seq: int
    sent_ns: int
    blob: str


class BenchEvent(IntegrationEvent[Payload]):
    EVENT_TYPE = "bench.event"
    EVENT_VERSION = 1


def make_blob(size: int) -> str:
    """A blob that makes the compact JSON payload about `size` bytes long."""
    empty = Payload(seq=10_000, sent_ns=now_ns(), blob="").model_dump_json()
    return "x" * max(0, size - len(empty))


def now_ns() -> int:
    """The send/receive clock: monotonic, shared by producer and consumer in this process."""
    return time.perf_counter_ns()


def encode_raw(seq: int, sent_ns: int, blob: str) -> bytes:
    """What a raw-client user would send: the same JSON as `Payload.model_dump_json()`."""
    return json.dumps({"seq": seq, "sent_ns": sent_ns, "blob": blob},
                      separators=(",", ":")).encode()


def decode_raw(value: bytes | None) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(value or b"{}")
    return body
