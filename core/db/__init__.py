"""A database per service: async engine and sessions (`engine.py`), declarative base and
mixins (`models.py`), per-service Alembic migrations (`migrations.py`)."""

from core.db.engine import Database

__all__ = ["Database"]
