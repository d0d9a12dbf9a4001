"""Alembic environment of the order service; the logic lives in core.db.migrations."""

from core.db import run_env
from services.order.models import Base

run_env(Base.metadata)
