"""What the resilience guards raise when they refuse or stop a call.

They are not HTTP errors: the layer that knows what was being called (the service client, the
gateway) translates them, with `raise ... from`, into the answer its own caller should see.
"""

from __future__ import annotations


class ResilienceError(Exception):
    """Root of the errors raised by the guards in `core.resilience`."""


class CircuitOpenError(ResilienceError):
    """The breaker refused the call without trying it; `retry_after` says when to come back."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = max(0.0, retry_after)
        """Seconds until the breaker lets a probe through (0: probes are already in flight)."""
        super().__init__(f"circuit {name!r} is open; retry in {self.retry_after:.1f}s")


class BulkheadFullError(ResilienceError):
    """Every slot was busy and the wait queue was full, or the wait ran out."""

    def __init__(self, name: str, limit: int, waited: float) -> None:
        self.name = name
        self.limit = limit
        self.waited = waited
        super().__init__(f"bulkhead {name!r} is full ({limit} calls in flight)")


class CallTimeoutError(ResilienceError, TimeoutError):
    """`what` took longer than `after` seconds and was cancelled."""

    def __init__(self, what: str, after: float) -> None:
        self.what = what
        self.after = after
        super().__init__(f"{what} timed out after {after:.3g}s")
