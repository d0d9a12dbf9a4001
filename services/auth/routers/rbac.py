"""Roles, permissions, assignments and service clients: admins only (`rbac:manage`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from core.bases import SessionDep, error_responses
from core.security import require_permission
from services.auth.deps import RbacDep
from services.auth.rules.clients import Clients
from services.auth.rules.rbac import MANAGE
from services.auth.schemas import (
    NAME_PATTERN,
    ClientCreate,
    ClientCreated,
    RoleCreate,
    RolePermissions,
    RolePublic,
    UserRoles,
)

router = APIRouter(prefix="/auth", tags=["rbac"],
                   dependencies=[Depends(require_permission(MANAGE))])
RoleParam = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]


@router.get("/roles")
async def list_roles(rbac: RbacDep) -> list[RolePublic]:
    return await rbac.roles()


@router.post("/roles", status_code=status.HTTP_201_CREATED,
             responses=error_responses(400, 409, 422))
async def create_role(body: RoleCreate, rbac: RbacDep) -> RolePublic:
    return await rbac.create_role(body.name, body.description, body.permissions)


@router.put("/roles/{name}/permissions", responses=error_responses(400, 404, 409, 422))
async def set_role_permissions(name: RoleParam, body: RolePermissions,
                               rbac: RbacDep) -> RolePublic:
    """Replace the role's permissions; its holders get them with their next token."""
    return await rbac.set_permissions(name, body.permissions)


@router.put("/users/{user_id}/roles/{role}", responses=error_responses(404, 422))
async def assign_role(user_id: uuid.UUID, role: RoleParam, rbac: RbacDep) -> UserRoles:
    """Give the user `role` (idempotent); publishes auth.roles_changed when it changed."""
    return await rbac.assign(user_id, role)


@router.delete("/users/{user_id}/roles/{role}",
               responses=error_responses(404, 409, 422))
async def revoke_role(user_id: uuid.UUID, role: RoleParam, rbac: RbacDep) -> UserRoles:
    """Take `role` from the user (idempotent); the last admin keeps the admin role."""
    return await rbac.revoke(user_id, role)


@router.post("/clients", status_code=status.HTTP_201_CREATED,
             responses=error_responses(400, 409, 422))
async def create_client(body: ClientCreate, session: SessionDep) -> ClientCreated:
    """A service identity for client credentials; the secret is in this answer only."""
    return await Clients(session).create(body.name, body.permissions)
