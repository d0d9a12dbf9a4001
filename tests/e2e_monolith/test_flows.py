"""The multi-process stack's end-to-end flows, run unchanged against the one-process system:
the same test functions (collected here, so they get this package's `system`), through the
gateway, Kafka and each service's own database.

- correlation: gateway -> auth (HTTP) -> auth.events -> user -> user.events, and the
  notification service's welcome row, each hop keeping the client's correlation id;
- orders: 30 orders racing for 10 drivers through the ride saga (order -> driver.commands ->
  driver -> saga replies), exactly 10 confirmed, no driver reserved twice.

Not re-run: what needs one service stopped while the others run (a process each), the trace
tree (one process has one tracer provider: its spans name the process), and Prometheus's
per-process scrape (tests/e2e/test_observability.py)."""

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
