"""Accounts: registering, finding, roles and permissions of a user, changing a password."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases import ConflictError, EventOutbox, FieldError, NotFoundError, ValidationError
from core.db import utcnow
from services.auth.events import (
    TOPIC,
    PasswordChanged,
    PasswordChangedData,
    UserRegistered,
    UserRegisteredData,
)
from services.auth.locks import lock
from services.auth.models import RolePermission, User, UserRole
from services.auth.passwords import Passwords, check_password, normalise_email

DEFAULT_ROLES = ("user",)


class Accounts:
    """Not shared between requests: it holds the caller's session."""

    def __init__(self, session: AsyncSession, outbox: EventOutbox | None,
                 passwords: Passwords) -> None:
        self.session = session
        self.outbox = outbox
        self.passwords = passwords

    async def register(self, raw_email: str, password: str,
                       roles: tuple[str, ...] = DEFAULT_ROLES) -> tuple[User, list[str]]:
        """A new user with `roles`. An email already taken is a 409: registering reveals
        that an address has an account (as any sign-up without email verification must);
        login does not (one answer for both wrong email and wrong password)."""
        email = normalise_email(raw_email)
        check_password(password, email)
        if await self.by_email(email) is not None:
            raise _taken()
        user = User(id=uuid.uuid4(), email=email,
                    password_hash=await self.passwords.hash(password))
        self.session.add(user)
        try:
            await self.session.flush()  # a concurrent register of the same email loses here
        except IntegrityError as e:
            raise _taken() from e
        for role in roles:
            self.session.add(UserRole(user_id=user.id, role=role))
        await self.session.flush()
        await self._publish(UserRegistered(aggregate_id=str(user.id), data=UserRegisteredData(
            user_id=str(user.id), email=email, roles=sorted(roles))))
        return user, sorted(roles)

    async def by_email(self, email: str) -> User | None:
        found: User | None = (await self.session.execute(
            select(User).where(User.email == email))).scalar_one_or_none()
        return found

    async def get(self, user_id: uuid.UUID) -> User:
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFoundError("no such user")
        return user

    async def claims_of(self, user_id: uuid.UUID) -> tuple[list[str], list[str]]:
        return await claims_of(self.session, user_id)

    async def set_password(self, user: User, new_password: str, *,
                           current_password: str | None = None) -> None:
        """Hash and store `new_password` (checked against the policy) and publish
        auth.password_changed; the caller revokes the user's sessions in the same
        transaction."""
        check_password(new_password, user.email, field="new_password")
        if current_password is not None and new_password == current_password:
            raise ValidationError("the new password is the current one", fields=[
                FieldError("new_password", "must differ from the current password",
                           "unchanged", "body")])
        user.password_hash = await self.passwords.hash(new_password)
        user.password_changed_at = utcnow()
        await self.session.flush()
        await self._publish(PasswordChanged(aggregate_id=str(user.id),
                                            data=PasswordChangedData(user_id=str(user.id))))

    async def still_current(self, user: User, verified_hash: str) -> bool:
        """Whether the hash a password was verified against is still the user's, read under
        the user's row lock (services.auth.locks), held to the commit: a password change
        committed meanwhile makes a login that checked the old password fail, and one not yet
        committed waits for it. Sessions revoke under the same lock."""
        rows = await lock(self.session, User,
                          select(User.password_hash).where(User.id == user.id))
        return bool(rows) and rows[0][0] == verified_hash

    async def rehash_if_needed(self, user: User, password: str) -> None:
        """After a good login: rehash with today's parameters when they changed."""
        if self.passwords.needs_rehash(user.password_hash):
            user.password_hash = await self.passwords.hash(password)
            await self.session.flush()

    async def _publish(self, event: Any) -> None:
        if self.outbox is not None:
            await self.outbox.add(self.session, TOPIC, event)


async def claims_of(session: AsyncSession, user_id: uuid.UUID) -> tuple[list[str], list[str]]:
    """The user's roles and the union of their permissions, as they are now (what a token
    issued now carries)."""
    roles = list((await session.execute(
        select(UserRole.role).where(UserRole.user_id == user_id).order_by(UserRole.role)
    )).scalars())
    if not roles:
        return roles, []
    permissions = await session.execute(
        select(RolePermission.permission).where(RolePermission.role.in_(roles))
        .distinct().order_by(RolePermission.permission))
    return roles, list(permissions.scalars())


def _taken() -> ConflictError:
    return ConflictError("An account with this email already exists",
                         fields=[FieldError("email", "already registered", "unique", "body")])
