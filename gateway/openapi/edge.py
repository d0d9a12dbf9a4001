"""The statuses the gateway answers itself, as the merged document declares them: a client
generating code from the document, or a contract test, must find every status it can get.

Every operation can get 431 (headers over the limit). A proxied one can also get 400 (a path
the gateway refuses, a bad Content-Length), 413 (a body over the limit), 502/503/504 (no good
answer from an instance); 401 and 403 when its route is not public; 429 when its route is rate
limited. A status the service declares itself keeps the service's declaration.
"""

from __future__ import annotations

from typing import Any, Protocol

Json = dict[str, Any]

ERROR_SCHEMA = "GatewayError"
ERROR_BODY: Json = {
    "type": "object",
    "title": ERROR_SCHEMA,
    "description": "The platform's error body, as the gateway answers it.",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "Stable, for programs: `no_route`, "
                                                      "`rate_limited`, `upstream_timeout`, ..."},
            "message": {"type": "string", "description": "For people."},
        },
    }},
}
RETRY_AFTER: Json = {"Retry-After": {
    "description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}

DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request: a path the gateway refuses (a `.` or `..` segment, an empty one, an "
         "encoded `/`, `\\\\` or NUL, control characters), or a bad Content-Length.",
    401: "Unauthorized: no valid bearer token (checked at the gateway).",
    403: "Forbidden: the token lacks a permission this route needs (checked at the gateway).",
    413: "Content Too Large: the body is over the gateway's limit.",
    429: "Too Many Requests: over this route's rate limit for the caller.",
    431: "Request Header Fields Too Large: over the gateway's limit on headers.",
    502: "Bad Gateway: the service broke off or answered with a server error.",
    503: "Service Unavailable: no instance of the service can take the request now (or the "
         "token keys cannot be had).",
    504: "Gateway Timeout: the service did not answer within the route's timeout.",
}
_WITH_RETRY_AFTER = {429, 503}


class EdgeRoute(Protocol):
    """What is read of the route an operation is reached through."""

    @property
    def public(self) -> bool: ...
    @property
    def rate_limit(self) -> object | None: ...


def add_error_schema(components: Json) -> str:
    """Add the gateway's error body to `components["schemas"]` under a name no service uses;
    return the `$ref` to it."""
    schemas = components.setdefault("schemas", {})
    name = ERROR_SCHEMA if ERROR_SCHEMA not in schemas else f"gateway__{ERROR_SCHEMA}"
    schemas[name] = dict(ERROR_BODY)
    return f"#/components/schemas/{name}"


def edge_statuses(route: EdgeRoute | None) -> list[int]:
    """The statuses the gateway may answer for an operation reached through `route` (None:
    one of the gateway's own)."""
    if route is None:
        return [431]
    statuses = [400, 413, 431, 502, 503, 504]
    if not route.public:
        statuses += [401, 403]
    if route.rate_limit is not None:
        statuses.append(429)
    return sorted(statuses)


def declare_edge_statuses(op: Json, route: EdgeRoute | None, error_ref: str) -> None:
    """Add to `op["responses"]` each edge status it does not declare already."""
    responses = op.get("responses")
    if not isinstance(responses, dict):
        responses = op["responses"] = {}
    for status in edge_statuses(route):
        if str(status) in responses:
            continue
        response: Json = {"description": DESCRIPTIONS[status], "content": {
            "application/json": {"schema": {"$ref": error_ref}}}}
        if status in _WITH_RETRY_AFTER:
            response["headers"] = dict(RETRY_AFTER)
        responses[str(status)] = response
