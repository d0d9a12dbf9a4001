"""Calling other services over HTTP by name: `ServiceClient`, with the request context that
carries ids and identity from an incoming request to the calls it makes."""

from core.correlation import CORRELATION_ID_HEADER
from core.http.aiohttp_transport import AiohttpTransport
from core.http.auth import Auth, CallerOrService, ForwardCaller, NoAuth, ServiceToken, TokenProvider
from core.http.client import ClientConfig, ServiceClient
from core.http.context import (
    REQUEST_ID_HEADER,
    RequestContext,
    RequestContextMiddleware,
    install_request_context,
)
from core.http.deps import ServicesDep, get_services
from core.http.docs import swagger_ui_paths, swagger_ui_routes
from core.http.errors import (
    UpstreamBadResponseError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from core.http.h1_transport import H1Transport
from core.http.response import Response
from core.http.transport import ExchangeFailedError, Transport

__all__ = [
    "CORRELATION_ID_HEADER",
    "REQUEST_ID_HEADER",
    "AiohttpTransport",
    "Auth",
    "CallerOrService",
    "ClientConfig",
    "ExchangeFailedError",
    "ForwardCaller",
    "H1Transport",
    "NoAuth",
    "RequestContext",
    "RequestContextMiddleware",
    "Response",
    "ServiceClient",
    "ServiceToken",
    "ServicesDep",
    "TokenProvider",
    "Transport",
    "UpstreamBadResponseError",
    "UpstreamError",
    "UpstreamRejectedError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "get_services",
    "install_request_context",
    "swagger_ui_paths",
    "swagger_ui_routes",
]
