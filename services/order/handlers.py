"""What the order service does with Kafka records: the driver service's replies to the ride
saga (`order.saga-replies`), each handed to the running orchestrator in its inbox
transaction (`core.saga.saga_replies`). Its read models are projections (projections.py)."""

from __future__ import annotations

from core.messaging import HandlerRegistry
from core.saga import saga_replies
from services.order.events import order_events
from services.order.sagas import ride_saga

events = order_events()
handlers = HandlerRegistry(events)
saga_replies(handlers, ride_saga())
