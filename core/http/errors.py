"""What a call to another service raises when it did not get a usable answer.

Each is an `AppError` with its HTTP status, so a route that lets one through answers 502, 503
or 504 through the standard error handlers. Their message is written for clients: it names
the service and what went wrong, never an address, a library or the upstream's own text (that
goes to the log, as `detail` and the exception's cause).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from core.bases.errors import AppError

if TYPE_CHECKING:
    from core.http.response import Response


class UpstreamError(AppError):
    """Root of the errors of calls to other services."""

    expose: ClassVar[bool] = True
    template: ClassVar[str] = "Service '{service}' failed"

    def __init__(self, service: str, detail: str = "", *,
                 retry_after: float | None = None) -> None:
        headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
        super().__init__(self.template.format(service=service), headers=headers)
        self.service = service
        self.detail = detail
        """What happened, for the log only."""

    def __str__(self) -> str:
        return f"{self.message}: {self.detail}" if self.detail else self.message


class UpstreamUnavailableError(UpstreamError):
    """No instance could take the call: none known, all failing, all busy, or refused."""

    status_code = 503
    code = "upstream_unavailable"
    template = "Service '{service}' is unavailable"


class UpstreamTimeoutError(UpstreamError):
    """The service did not answer within the call's timeout or deadline."""

    status_code = 504
    code = "upstream_timeout"
    template = "Service '{service}' did not answer in time"


class UpstreamBadResponseError(UpstreamError):
    """The service answered with a server error, or with something that is not HTTP/JSON."""

    status_code = 502
    code = "upstream_error"
    template = "Service '{service}' answered with an error"

    def __init__(self, service: str, detail: str = "", *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(service, detail, retry_after=retry_after)
        self.status = status
        """The upstream's own status, when it answered one."""


class UpstreamRejectedError(UpstreamBadResponseError):
    """The service refused the request with a 4xx (raised only when the caller asked)."""

    code = "upstream_rejected"
    template = "Service '{service}' refused the request"

    def __init__(self, service: str, response: Response) -> None:
        super().__init__(service, f"status {response.status_code}",
                         status=response.status_code)
        self.response = response
