"""The error statuses a route can answer, declared in its OpenAPI with the standard error body.

The OpenAPI is the contract clients generate code from and contract tests check: a status a
route answers that it does not declare is a broken promise. Every route can answer 422 (its
parameters are validated) and 500 (nothing is infallible); the others depend on what the route
does, so each route names its own (`BaseRouter` does; custom routes can too)::

    @router.post("/{id}/publish", responses=error_responses(404, 409, 422, 500))
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from core.bases.schemas import ErrorResponse

DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request: the body is not valid JSON.",
    401: "Unauthorized: no valid credentials were presented.",
    403: "Forbidden: the caller may not do this.",
    404: "Not Found: no such resource (soft-deleted ones count as missing).",
    409: "Conflict: a duplicate, or a rule of the current state forbids it.",
    413: "Content Too Large: the body is larger than this route accepts.",
    422: "Unprocessable Content: invalid input; `fields` say which and why.",
    500: "Internal Server Error: the body never carries the cause; the service logs it.",
}


def error_responses(*statuses: int | Iterable[int]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route answering `statuses` (ints or iterables of them), each with
    the standard error body."""
    codes: set[int] = set()
    for status in statuses:
        codes.update((status,) if isinstance(status, int) else status)
    return {code: {"model": ErrorResponse,
                   "description": DESCRIPTIONS.get(code, HTTPStatus(code).phrase)}
            for code in sorted(codes)}
