"""Alembic environment of the auth service; the logic lives in core.db.migrations."""

from core.db import run_env
from services.auth.models import Base

run_env(Base.metadata)
