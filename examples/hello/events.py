"""The one event the hello pair exchanges."""

from pydantic import BaseModel

from core.messaging.events import DomainEvent
from core.messaging.serialization import EventRegistry

TOPIC = "hello.events"


class Greeting(BaseModel):
    number: int
    text: str


class GreetingSent(DomainEvent[Greeting]):
    EVENT_TYPE = "hello.greeting_sent"


events = EventRegistry()
events.register(GreetingSent)
