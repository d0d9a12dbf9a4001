"""Alembic environment of the user service; the logic lives in core.db.migrations."""

from core.db import run_env
from services.user.models import Base

run_env(Base.metadata)
