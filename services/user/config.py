"""The user service's settings: core's, with its own port and cache lifetime."""

from __future__ import annotations

from pydantic import Field

from core.config import Settings


class UserSettings(Settings):
    service_name: str = "user"
    service_port: int = Field(default=8002, ge=1, le=65535)
    profile_cache_ttl: float = Field(default=300.0, gt=0, le=86_400)
    """Seconds a cached profile may be served. Invalidation (after each write, and on each
    `user.profile_updated`) keeps it fresh; the TTL only bounds an entry both missed."""
