"""Alembic environment of the driver service; the logic lives in core.db.migrations."""

from core.db import run_env
from services.driver.models import Base

run_env(Base.metadata)
