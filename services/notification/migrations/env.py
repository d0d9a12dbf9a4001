"""Alembic environment of the notification service; the logic lives in core.db.migrations."""

from core.db import run_env
from services.notification.models import Base

run_env(Base.metadata)
