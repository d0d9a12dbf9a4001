"""The FastAPI dependency of routes that call other services: the service's one
`ServiceClient`, built by `create_service` (its pools and breakers are shared by every call).

    async def nearby(services: ServicesDep) -> ...:
        drivers = (await services.get("driver", "/drivers/nearby", params=...)).json()
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.bases.errors import ConfigurationError
from core.http.client import ServiceClient


def get_services(request: Request) -> ServiceClient:
    runtime = getattr(request.app.state, "runtime", None)
    services = getattr(runtime, "services", None)
    if not isinstance(services, ServiceClient):
        raise ConfigurationError("no service client: build the app with create_service")
    return services


ServicesDep = Annotated[ServiceClient, Depends(get_services)]
