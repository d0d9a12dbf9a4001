"""What clients send and receive. Inputs forbid unknown fields; lengths are bounded here so
nothing oversized reaches a hash or the database."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.auth.models import EMAIL_MAX, NAME_MAX

PERMISSION_PATTERN = r"^[a-z][a-z0-9_-]{0,47}:[a-z][a-z0-9_-]{0,47}$"
NAME_PATTERN = r"^[a-z][a-z0-9_-]{1,63}$"

Email = Annotated[str, StringConstraints(min_length=3, max_length=EMAIL_MAX + 40,
                                         pattern=r"^\s*[^@\s]+@[^@\s]+\.[^@\s.]+\s*$")]
"""Checked and normalised by services.auth.passwords.normalise_email (spaces around allowed)."""
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
"""Any password a login may present; the policy (10-128) applies when one is chosen."""
PermissionName = Annotated[str, StringConstraints(pattern=PERMISSION_PATTERN)]
RoleName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=NAME_MAX)]
RefreshTokenValue = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(Input):
    email: Email
    password: Password


class LoginRequest(Input):
    email: Email
    password: Password


class RefreshRequest(Input):
    refresh_token: RefreshTokenValue


class PasswordChangeRequest(Input):
    current_password: Password
    new_password: Password


class UserPublic(BaseModel):
    id: uuid.UUID
    email: str
    roles: list[str]


class Me(BaseModel):
    """The caller: a user (from the database, so roles are current) or a service client."""

    id: str
    kind: Literal["user", "service"]
    email: str | None
    roles: list[str]
    permissions: list[str]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds the access token is valid for.")


class AccessToken(BaseModel):
    """An OAuth2 token response (RFC 6749 §5.1)."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class OAuthError(BaseModel):
    """An OAuth2 error response (RFC 6749 §5.2)."""

    error: Literal["invalid_request", "invalid_client", "invalid_grant",
                   "unauthorized_client", "unsupported_grant_type", "invalid_scope"]
    error_description: str | None = None


class RoleCreate(Input):
    name: RoleName
    description: str = Field(default="", max_length=200)
    permissions: list[PermissionName] = Field(default_factory=list, max_length=200)


class RolePermissions(Input):
    permissions: list[PermissionName] = Field(max_length=200)


class RolePublic(BaseModel):
    name: str
    description: str
    permissions: list[str]


class UserRoles(BaseModel):
    user_id: uuid.UUID
    roles: list[str]


class ClientCreate(Input):
    name: RoleName = Field(description="Becomes the client id (the `sub` of its tokens); "
                                       "never a UUID, which is what user ids are.")
    permissions: list[PermissionName] = Field(default_factory=list, max_length=200)


class ClientCreated(BaseModel):
    client_id: str
    client_secret: str = Field(description="Shown once; only its hash is kept.")
    permissions: list[str]
