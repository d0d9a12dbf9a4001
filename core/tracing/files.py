"""Spans as JSON lines in a file, for where no collector runs (`make up`, tests), and back.

Every process of a stack may append to one file: each export is one `write` of whole lines to
a file opened `O_APPEND`, which the kernel does not interleave with another process's.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["JsonLinesSpanExporter", "SpanRecord", "read_spans"]


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per span to `path` (the fields of `SpanRecord`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(_as_dict(span), separators=(",", ":")) + "\n"
                       for span in spans).encode()
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            os.write(self._fd, data)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is written at once


def _as_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    parent = span.parent
    resource = span.resource.attributes
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": resource.get("service.name"),
        "instance": resource.get("service.instance.id"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})}
                   for e in span.events],
    }


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span as the file holds it."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str | None
    start_ns: int
    end_ns: int
    status: str = "UNSET"
    instance: str | None = None
    status_description: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def read_spans(paths: Iterable[str | os.PathLike[str]],
               trace_id: str | None = None) -> list[SpanRecord]:
    """The spans in the files (of one trace, when `trace_id` is given), in start order. A
    line cut short (a process killed mid-write) is skipped."""
    wanted = trace_id.lower() if trace_id else None
    found = [span for path in paths for span in _lines(Path(path))
             if wanted is None or span.trace_id == wanted]
    return sorted(found, key=lambda s: s.start_ns)


def _lines(path: Path) -> Iterator[SpanRecord]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as file:
        for line in file:
            try:
                data = json.loads(line)
                yield SpanRecord(**data)
            except (ValueError, TypeError):
                continue
