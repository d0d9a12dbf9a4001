"""core.db.models and core.db.types: a base per service, the naming convention, UTC datetimes,
time-ordered ids."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import String
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateTable

from core.db.models import (
    NAMING_CONVENTION,
    ServiceBase,
    SoftDeleteMixin,
    TimestampMixin,
    UUIDPrimaryKeyMixin,
    is_soft_deletable,
)
from core.db.types import UtcDateTime, uuid7


def test_each_service_base_has_its_own_metadata_with_the_naming_convention() -> None:
    class UserBase(ServiceBase, DeclarativeBase):
        pass

    class OrderBase(ServiceBase, DeclarativeBase):
        pass

    class User(UUIDPrimaryKeyMixin, TimestampMixin, SoftDeleteMixin, UserBase):
        __tablename__ = "users"
        email: Mapped[str] = mapped_column(String(200), unique=True)

    assert UserBase.metadata is not OrderBase.metadata
    assert set(UserBase.metadata.tables) == {"users"} and not OrderBase.metadata.tables
    assert UserBase.metadata.naming_convention == {**NAMING_CONVENTION,
                                                   **UserBase.metadata.naming_convention}
    assert is_soft_deletable(User)
    ddl = str(CreateTable(User.__table__).compile(dialect=postgresql.dialect()))  # type: ignore[arg-type]
    assert "CONSTRAINT pk_users PRIMARY KEY (id)" in ddl
    assert "CONSTRAINT uq_users_email UNIQUE (email)" in ddl
    assert ddl.index("id UUID") < ddl.index("email") < ddl.index("created_at")
    assert "created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL" in ddl


def test_service_base_must_come_before_declarative_base() -> None:
    with pytest.raises(TypeError, match="before DeclarativeBase"):
        class Wrong(DeclarativeBase, ServiceBase):  # type: ignore[misc]
            pass


def test_utc_datetime_stores_utc_and_reads_aware() -> None:
    column = UtcDateTime()
    dialect = sqlite.dialect()
    plus_two = datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert column.process_bind_param(plus_two, dialect) == datetime(2024, 5, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="naive"):
        column.process_bind_param(datetime(2024, 5, 1), dialect)
    assert column.process_result_value(datetime(2024, 5, 1, 10), dialect) == datetime(
        2024, 5, 1, 10, tzinfo=UTC)
    assert column.process_result_value("2024-05-01 10:00:00", dialect) == datetime(
        2024, 5, 1, 10, tzinfo=UTC)
    assert column.process_result_value(None, dialect) is None


def test_uuid7_is_version_7_and_time_ordered() -> None:
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    assert first.version == 7 and first.variant == uuid.RFC_4122
    assert first < second
    assert len({uuid7() for _ in range(1000)}) == 1000
