"""A database per service: async engine and sessions (`engine.py`), declarative base and
mixins (`models.py`), column types (`types.py`), per-service Alembic migrations
(`migrations.py`).

The public surface (pinned by `tests/unit/test_public_api.py`): services import from here."""

from core.db.engine import Database
from core.db.migrations import MigrationError, run_env
from core.db.models import (
    ServiceBase,
    SoftDeleteMixin,
    StringPrimaryKeyMixin,
    TimestampMixin,
    UUIDPrimaryKeyMixin,
)
from core.db.types import UtcDateTime, utcnow, uuid7

__all__ = [
    "Database",
    "MigrationError",
    "ServiceBase",
    "SoftDeleteMixin",
    "StringPrimaryKeyMixin",
    "TimestampMixin",
    "UUIDPrimaryKeyMixin",
    "UtcDateTime",
    "run_env",
    "utcnow",
    "uuid7",
]
