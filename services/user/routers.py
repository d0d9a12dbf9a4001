"""HTTP routes: the caller's own profile (`/users/me`), one user's profile (owner or
`users:read`; updates need `users:write`), and the admin list and search (BaseRouter's list,
`users:read`).

`me` is included before `users`, so `/users/me` is never read as a user id.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations as
# objects (the permission checks are closures).

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from core.bases import BaseRouter, Envelope, Permissions, error_responses
from core.security import CurrentUser, owner_or, require_permission
from services.user.deps import ProfilesDep
from services.user.models import Profile
from services.user.rules import ProfileService
from services.user.schemas import ProfileCreate, ProfilePublic, ProfileUpdate

UserId = Annotated[uuid.UUID, Path(description="The user's id (the token's subject).")]
One = Envelope[ProfilePublic]


def path_user(request: Request) -> str | None:
    """The owner of `/users/{user_id}`: the id in its canonical spelling, so an owner who
    writes it in capitals is still the owner."""
    value = request.path_params.get("user_id")
    try:
        return None if value is None else str(uuid.UUID(str(value)))
    except ValueError:
        return None


me = APIRouter(prefix="/users", tags=["profiles"])


@me.get("/me", response_model=One, summary="Read my profile",
        dependencies=[Depends(require_permission("profile:read"))],
        responses=error_responses(404, 422, 500))
async def read_me(principal: CurrentUser, profiles: ProfilesDep) -> One:
    return One(data=await profiles.read(principal.subject))


@me.patch("/me", response_model=One, summary="Update my profile (partial)",
          dependencies=[Depends(require_permission("profile:write"))],
          responses=error_responses(400, 404, 422, 500))
async def update_me(data: ProfileUpdate, principal: CurrentUser,
                    profiles: ProfilesDep) -> One:
    return One(data=await profiles.update(principal.subject, data), message="Profile updated")


users: BaseRouter[Profile, ProfileCreate, ProfileUpdate, ProfilePublic] = BaseRouter(
    ProfileService, prefix="/users", tags=["users"], routes={"list"},
    create_schema=ProfileCreate, update_schema=ProfileUpdate, public_schema=ProfilePublic,
    permissions=Permissions(read=[require_permission("users:read")]))


@users.get("/{user_id}", response_model=One, summary="Read a user's profile",
           dependencies=[Depends(owner_or("users:read", owner_of=path_user))],
           responses=error_responses(404, 422, 500))
async def read_user(user_id: UserId, profiles: ProfilesDep) -> One:
    return One(data=await profiles.read(str(user_id)))


@users.patch("/{user_id}", response_model=One, summary="Update a user's profile (partial)",
             dependencies=[Depends(require_permission("users:write"))],
             responses=error_responses(400, 404, 422, 500))
async def update_user(user_id: UserId, data: ProfileUpdate, profiles: ProfilesDep) -> One:
    return One(data=await profiles.update(str(user_id), data), message="Profile updated")
