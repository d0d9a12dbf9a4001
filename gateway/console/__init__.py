"""The operations console at `/console` (docs/console.md): server-rendered pages (Jinja2,
htmx vendored in `static/htmx/`) for admins, on the gateway's own app."""

from gateway.console.kafka import ConsoleKafka
from gateway.console.pages import Console, install
from gateway.console.services_ops import ServiceOps
from gateway.console.session import PREFIX
from gateway.console.status import EdgeStatus

__all__ = ["PREFIX", "Console", "ConsoleKafka", "EdgeStatus", "ServiceOps", "install"]
