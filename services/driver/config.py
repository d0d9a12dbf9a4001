"""The driver service's settings: the platform's, plus its own limits."""

from __future__ import annotations

from pydantic import Field

from core.config import Settings


class DriverSettings(Settings):
    """Environment variables, upper-cased (`NEARBY_MAX_RADIUS_KM`, ...)."""

    service_name: str = "driver"
    service_port: int = Field(default=8003, ge=1, le=65535)

    user_service: str = "user"
    """The name the user service is discovered by (onboarding checks the profile there)."""
    user_call_timeout: float = Field(default=2.0, gt=0, le=30)
    """Seconds one attempt of the profile check may take; the whole call gets twice that."""
    nearby_max_radius_km: float = Field(default=50.0, gt=0, le=500)
    nearby_max_limit: int = Field(default=100, ge=1, le=1000)
    stream_queue_size: int = Field(default=32, ge=1, le=10_000)
    """Locations kept per stream subscriber; a slow client loses the oldest beyond this."""
    stream_ping_seconds: float = Field(default=15.0, gt=0)
    """Seconds between keep-alive comments on an idle location stream."""
    stream_max_seconds: float = Field(default=3600.0, gt=0)
    """A stream ends after this long, or when the caller's token expires if sooner: the
    token was checked once, at the start; the client reconnects (with a fresh token)."""
