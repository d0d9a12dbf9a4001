"""Roles, their permissions, and who holds them. Changes show in the next token a user gets
(a login or a refresh); a change of a user's roles is published as auth.roles_changed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases import ConflictError, EventOutbox, NotFoundError
from services.auth.events import TOPIC, RolesChanged, RolesChangedData
from services.auth.locks import lock
from services.auth.models import Role, RolePermission, User, UserRole
from services.auth.schemas import RolePublic, UserRoles

ADMIN_ROLE = "admin"
MANAGE = "rbac:manage"


class Rbac:
    """Not shared between requests: it holds the caller's session."""

    def __init__(self, session: AsyncSession, outbox: EventOutbox | None) -> None:
        self.session = session
        self.outbox = outbox

    async def roles(self) -> list[RolePublic]:
        roles = (await self.session.execute(select(Role).order_by(Role.name))).scalars().all()
        grants = await self.session.execute(
            select(RolePermission.role, RolePermission.permission)
            .order_by(RolePermission.permission))
        by_role: dict[str, list[str]] = {}
        for role, permission in grants:
            by_role.setdefault(role, []).append(permission)
        return [RolePublic(name=r.name, description=r.description,
                           permissions=by_role.get(r.name, [])) for r in roles]

    async def create_role(self, name: str, description: str,
                          permissions: Iterable[str]) -> RolePublic:
        if await self.session.get(Role, name) is not None:
            raise ConflictError(f"role {name} exists")
        self.session.add(Role(name=name, description=description))
        await self.session.flush()
        return await self.set_permissions(name, permissions)

    async def set_permissions(self, name: str, permissions: Iterable[str]) -> RolePublic:
        """Replace the role's permissions. The admin role keeps rbac:manage: without it
        nobody could manage roles again (short of the database)."""
        role = await self._role(name)
        wanted = sorted(set(permissions))
        if name == ADMIN_ROLE and MANAGE not in wanted:
            raise ConflictError(f"the {ADMIN_ROLE} role must keep {MANAGE}")
        await self.session.execute(delete(RolePermission).where(RolePermission.role == name))
        self.session.add_all(RolePermission(role=name, permission=p) for p in wanted)
        await self.session.flush()
        return RolePublic(name=name, description=role.description, permissions=wanted)

    async def assign(self, user_id: uuid.UUID, role: str) -> UserRoles:
        await self._check(user_id, role)
        held = await self._held(user_id)
        if role not in held:
            self.session.add(UserRole(user_id=user_id, role=role))
            await self.session.flush()
            held = sorted([*held, role])
            await self._changed(user_id, held)
        return UserRoles(user_id=user_id, roles=held)

    async def revoke(self, user_id: uuid.UUID, role: str) -> UserRoles:
        """Take `role` from the user. The last admin keeps the admin role: the check and the
        delete run under the admin role's row lock, so two admins taking each other's role at
        once run one after the other, and the second finds itself the last."""
        await self._check(user_id, role)
        if role == ADMIN_ROLE:
            await lock(self.session, Role, select(Role.name).where(Role.name == ADMIN_ROLE))
        held = await self._held(user_id)
        if role in held:
            if role == ADMIN_ROLE and await self._admins() <= 1:
                raise ConflictError("the last admin keeps the admin role")
            await self.session.execute(delete(UserRole).where(
                UserRole.user_id == user_id, UserRole.role == role))
            held = [r for r in held if r != role]
            await self._changed(user_id, held)
        return UserRoles(user_id=user_id, roles=held)

    async def _check(self, user_id: uuid.UUID, role: str) -> None:
        if await self.session.get(User, user_id) is None:
            raise NotFoundError("no such user")
        await self._role(role)

    async def _role(self, name: str) -> Role:
        role = await self.session.get(Role, name)
        if role is None:
            raise NotFoundError(f"no role {name}")
        return role

    async def _held(self, user_id: uuid.UUID) -> list[str]:
        rows = await self.session.execute(
            select(UserRole.role).where(UserRole.user_id == user_id).order_by(UserRole.role))
        return list(rows.scalars())

    async def _admins(self) -> int:
        count = await self.session.scalar(
            select(func.count()).select_from(UserRole).where(UserRole.role == ADMIN_ROLE))
        return int(count or 0)

    async def _changed(self, user_id: uuid.UUID, roles: list[str]) -> None:
        if self.outbox is not None:
            await self.outbox.add(self.session, TOPIC, RolesChanged(
                aggregate_id=str(user_id),
                data=RolesChangedData(user_id=str(user_id), roles=roles)))
