"""The multi-process stack's correlation flow, run unchanged against the one-process system
on the in-memory bus: gateway -> auth (HTTP) -> auth.events -> user -> user.events, and the
notification service's welcome row, each hop keeping the client's correlation id, with no
Kafka anywhere (the test reads the events from the monolith's in-memory broker)."""

from tests.e2e.test_correlation import (
    test_the_correlation_id_sent_to_the_gateway_reaches_every_event_and_the_notification,
)

__all__ = ["test_the_correlation_id_sent_to_the_gateway_reaches_every_event_and_the_notification"]
