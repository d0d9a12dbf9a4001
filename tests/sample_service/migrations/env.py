"""Alembic environment of the sample_service service; the logic lives in core.db.migrations."""

from core.db.migrations import run_env
from tests.sample_service.models import Base

run_env(Base.metadata)
