"""The correlation and causation ids of the work in progress, for everything it causes.

One user action gets one correlation id where it enters (an HTTP request's `X-Correlation-ID`,
bound by `core.http`'s request-context middleware); the consumer binds a consumed event's
correlation id, and its event id as the causation id, around each handler run. Whatever runs
inside reads them from here: the outbox writer and the bus stamp them on events that name
none, the service client sends `X-Correlation-ID`, and `core.logs` puts them on log lines
(`CorrelationLogFilter` does for a plain text format). This module imports nothing of core, so
`core.http`, `core.messaging` and `core.logs` all use it.

A context variable, so each request and each handler run (its own task, or a block bound
with `bound`) sees its own ids, and nothing leaks out of the block that bound them. The same
variable holds the event being handled, for `core.logs` (`bind_event`): the consumer binds
both with one set and one reset per record (`bind_handling`), not one of each per variable.
Binding ids keeps the event bound, and binding an event keeps the ids: both nest as before,
as long as tokens are given back in the reverse order of binding (a token restores both).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, NamedTuple

CORRELATION_ID_HEADER = "X-Correlation-ID"
"""The HTTP header that carries the correlation id between processes."""
NO_ID = "-"
"""What `CorrelationLogFilter` puts on a line logged outside any correlation."""


class Correlation(NamedTuple):
    """The ids bound for the work in progress. A named tuple, not a frozen dataclass: the
    consumer builds one per record, and a tuple is built in about half the time."""

    correlation_id: str
    """Ties together everything one user action caused."""
    causation_id: str | None = None
    """The id of the event being handled (None in an HTTP request: no event caused it)."""


Bound = tuple[Correlation | None, Any, str | None, Any]
"""What the context variable holds: the ids (None when unbound), and the event being handled
with its id and its record (`core.logs.context`'s, all None outside a handler)."""

_new = tuple.__new__
_NOTHING: Bound = (None, None, None, None)
_current: ContextVar[Bound] = ContextVar("correlation", default=_NOTHING)


def current() -> Correlation | None:
    """The ids bound for the work in progress, or None outside any (a job, a test)."""
    return _current.get()[0]


@contextmanager
def bound(correlation_id: str, causation_id: str | None = None) -> Iterator[Correlation]:
    """Make these ids current for a block, and restore the outer ones after it."""
    correlation = Correlation(correlation_id, causation_id)
    token = _current.set((correlation, *_current.get()[1:]))
    try:
        yield correlation
    finally:
        _current.reset(token)


def bind(correlation_id: str, causation_id: str | None = None) -> Token[Bound]:
    """`bound` without the context manager, for a hot path: pass the token to `unbind`."""
    _, event, event_id, record = _current.get()
    return _current.set((_new(Correlation, (correlation_id, causation_id)),  # no Python __new__
                         event, event_id, record))


def unbind(token: Token[Bound]) -> None:
    """Restore the ids (and the event) that were current before `bind` returned `token`."""
    _current.reset(token)


def bind_handling(correlation_id: str, event: Any, event_id: str, record: Any) -> Token[Bound]:
    """The consumer's per-record binding: the event's ids (`event_id` as the causation id)
    and the event with its record for `core.logs`, in one set; `unbind` restores both."""
    return _current.set((_new(Correlation, (correlation_id, event_id)), event, event_id, record))


class CorrelationLogFilter(logging.Filter):
    """Adds `correlation_id` and `causation_id` (or `NO_ID`) to every record it passes, for a
    format that shows them. Attach it to handlers: a handler's filters see records that
    propagate from every logger, a logger's own see only that logger's."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _current.get()[0]
        record.correlation_id = ids.correlation_id if ids is not None else NO_ID
        record.causation_id = (ids.causation_id or NO_ID) if ids is not None else NO_ID
        return True
