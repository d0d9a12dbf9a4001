"""The multi-process stack's end-to-end flows, run unchanged against the one-process system
on the in-memory bus, with no Kafka anywhere (the tests read the events from the monolith's
in-memory broker, which runs in the test's own process):

- correlation: gateway -> auth (HTTP) -> auth.events -> user -> user.events, and the
  notification service's welcome row, each hop keeping the client's correlation id;
- orders: 30 orders racing for 10 drivers through the ride saga (order -> driver.commands ->
  driver -> saga replies), exactly 10 confirmed, no driver reserved twice."""

from tests.e2e.test_correlation import (
    test_the_correlation_id_sent_to_the_gateway_reaches_every_event_and_the_notification,
)
from tests.e2e.test_orders import (
    test_30_orders_for_10_drivers_confirm_exactly_10_and_share_no_driver,
)

__all__ = [
    "test_30_orders_for_10_drivers_confirm_exactly_10_and_share_no_driver",
    "test_the_correlation_id_sent_to_the_gateway_reaches_every_event_and_the_notification",
]
