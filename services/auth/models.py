"""The auth service's tables: users, roles and their permissions, refresh tokens, service
clients, failed-login counts; plus its outbox and lease (it consumes nothing: no inbox)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db import ServiceBase, TimestampMixin, UtcDateTime, UUIDPrimaryKeyMixin
from core.messaging import messaging_tables

EMAIL_MAX = 254
NAME_MAX = 64
PERMISSION_MAX = 100


class Base(ServiceBase, DeclarativeBase):
    pass


class User(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)
    """Normalised (services.auth.passwords.normalise_email): unique as stored."""
    password_hash: Mapped[str] = mapped_column(String(255))
    password_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Role(TimestampMixin, Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    description: Mapped[str] = mapped_column(String(200), default="")


class RolePermission(Base):
    """`resource:action` strings granted by a role."""

    __tablename__ = "role_permissions"

    role: Mapped[str] = mapped_column(
        String(NAME_MAX), ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(PERMISSION_MAX), primary_key=True)


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(
        String(NAME_MAX), ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True,
        index=True)


class RefreshToken(UUIDPrimaryKeyMixin, Base):
    """One refresh token, stored as the SHA-256 of its value. A login starts a family; each
    refresh adds a child (`parent_id`) and marks the parent used. Revoking is per family."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_user_id_live", "user_id", "revoked_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid(), index=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ServiceClient(TimestampMixin, Base):
    """A service identity for client credentials; the secret is stored as its SHA-256 (it is
    32 random bytes: a slow hash adds nothing against guessing, and would make every token
    request cost a password hash)."""

    __tablename__ = "service_clients"

    client_id: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))


class ClientPermission(Base):
    __tablename__ = "client_permissions"

    client_id: Mapped[str] = mapped_column(
        String(NAME_MAX), ForeignKey("service_clients.client_id", ondelete="CASCADE"),
        primary_key=True)
    permission: Mapped[str] = mapped_column(String(PERMISSION_MAX), primary_key=True)


login_failures = Table(
    "login_failures", Base.metadata,
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", Double, nullable=False),
    Column("last_failure_at", Double, nullable=False),
)
"""Failed-login counts when there is no Redis (services.auth.throttle.database)."""

outbox = messaging_tables(Base.metadata, inbox=False).outbox
