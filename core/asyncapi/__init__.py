"""AsyncAPI 3.0: each service's event API (channels, messages, who sends and receives),
served at `/asyncapi.json`, merged at the gateway and by `python -m core events docs`.
`core.asyncapi.validation` checks a document (it needs a development dependency)."""

from core.asyncapi.document import asyncapi_document, message_id
from core.asyncapi.http import ASYNCAPI_URL
from core.asyncapi.merge import merge_asyncapi
from core.asyncapi.topology import Published, Request, Topology, topology

__all__ = ["ASYNCAPI_URL", "Published", "Request", "Topology", "asyncapi_document",
           "merge_asyncapi", "message_id", "topology"]
