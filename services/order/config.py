"""The order service's settings: the platform's, plus the ride saga's limits."""

from __future__ import annotations

from pydantic import Field

from core.config import Settings


class OrderSettings(Settings):
    """Environment variables, upper-cased (`PICKUP_RADIUS_KM`, ...)."""

    service_name: str = "order"
    service_port: int = Field(default=8005, ge=1, le=65535)

    pickup_radius_km: float = Field(default=5.0, gt=0, le=50)
    """How far from the pickup a driver may be to be reserved."""
    reserve_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds the saga waits for the driver service to answer a reserve; then the order is
    rejected and the reservation, if it happened after all, released."""
    release_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds one attempt to release a driver may wait for its answer before it is retried."""
