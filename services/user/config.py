"""The user service's settings: core's, with its own port, database and cache lifetime."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from sqlalchemy.engine import make_url

from core.config import Settings

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./.local/user.db"


class UserSettings(Settings):
    service_name: str = "user"
    service_port: int = Field(default=8002, ge=1, le=65535)
    database_url: str = DEFAULT_DATABASE_URL
    profile_cache_ttl: float = Field(default=300.0, gt=0, le=86_400)
    """Seconds a cached profile may be served. Invalidation (after each write, and on each
    `user.profile_updated`) keeps it fresh; the TTL only bounds an entry both missed."""


def ensure_sqlite_folder(url: str) -> None:
    """Make the folder of a SQLite file database, so a first run needs no setup."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
