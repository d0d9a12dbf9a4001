"""FastAPI dependencies of authenticated routes, as `Annotated` aliases and permission makers.

    @router.get("/me")
    async def me(principal: CurrentPrincipal) -> ...

    @router.get("/notifications")
    async def mine(user: CurrentUser) -> ...   # a user's token only; a service's is a 403

    Permissions(create=[require_permission("drivers:write")],
                update=[owner_or("drivers:write", owner_of=driver_owner)])

Each one is a core.bases.types.Permission: it returns to allow, raises TokenRejectedError (401) for
a missing or bad token and ForbiddenError (403) for a good token without the right. The
verifier comes from `app.state.security` (core.security.wiring.install_security), so a
service wires it once. Within one request the token is verified once, however many checks
ask for the principal (FastAPI caches a dependency per request).
"""

# No `from __future__ import annotations`: the checks are closures, and FastAPI must see their
# annotations as objects, not as strings it would resolve in module globals.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.bases.errors import ConfigurationError, ForbiddenError
from core.bases.types import Permission
from core.security.errors import TokenRejectedError
from core.security.types import Principal
from core.security.verifier import TokenVerifier

_bearer = HTTPBearer(auto_error=False, description="An access token from the auth service")
"""Only for the OpenAPI security scheme; the header itself is read below, strictly."""

Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_verifier(request: Request) -> TokenVerifier:
    security = getattr(request.app.state, "security", None)
    verifier = getattr(security, "verifier", None)
    if not isinstance(verifier, TokenVerifier):
        raise ConfigurationError("no verifier: call core.security.install_security(app, ...)")
    return verifier


Verifier = Annotated[TokenVerifier, Depends(get_verifier)]


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer <token>`; None without the header. Any other
    scheme, or a bearer without a token, is a refused credential, not an anonymous caller."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenRejectedError("malformed", "expected Authorization: Bearer <token>")
    return token


async def optional_principal(request: Request, verifier: Verifier,
                             _: Bearer = None) -> Principal | None:
    """The caller on a public route: None when anonymous; a bad token is still a 401."""
    token = bearer_token(request)
    if token is None:
        return None
    return await verifier.verify(token)


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def current_principal(principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise TokenRejectedError("missing_token", "this route needs a bearer token")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
"""Any caller with a valid token, user or service: for routes that read only permissions."""


async def current_user(principal: CurrentPrincipal) -> Principal:
    """The caller, who must be a user: a route acting "as the caller" (my profile, my
    notifications) has nothing to act on for a service client, whose subject is no user id."""
    if principal.kind != "user":
        raise ForbiddenError("this route acts as a user; a service token has no user")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


async def current_service(principal: CurrentPrincipal) -> Principal:
    """The caller, who must be a service client (routes for service-to-service calls)."""
    if principal.kind != "service":
        raise ForbiddenError("this route is for service clients only")
    return principal


CurrentService = Annotated[Principal, Depends(current_service)]


def require_permission(*permissions: str) -> Permission:
    """Allow a principal holding every one of `permissions`."""
    if not permissions:
        raise ConfigurationError("require_permission needs at least one permission")

    def check(principal: CurrentPrincipal) -> None:
        missing = [p for p in permissions if not principal.has_permission(p)]
        if missing:
            raise ForbiddenError(f"missing permission {', '.join(missing)}")

    return check


def require_role(role: str) -> Permission:
    """Allow a principal with `role`."""

    def check(principal: CurrentPrincipal) -> None:
        if not principal.has_role(role):
            raise ForbiddenError(f"requires role {role}")

    return check


OwnerOf = Callable[..., Awaitable[str | None] | str | None]
"""A FastAPI dependency giving the subject that owns the resource of the request (None when
there is none), e.g. `path_param("id")`, or one that loads the row through SessionDep."""


def owner_or(permission: str, *, owner_of: OwnerOf) -> Permission:
    """Allow the resource's owner (a user: see Principal.is_user), or a principal holding
    `permission` (say, an admin, or a service client granted it)."""

    def check(principal: CurrentPrincipal,
              resource_owner: Annotated[str | None, Depends(owner_of)]) -> None:
        if principal.has_permission(permission):
            return
        if resource_owner is None or not principal.is_user(resource_owner):
            raise ForbiddenError(f"only the owner or a holder of {permission} may do this")

    return check


def path_param(name: str) -> Callable[[Request], str | None]:
    """An `owner_of` for resources whose path id is the owner's subject (`/users/{id}`)."""

    def owner(request: Request) -> str | None:
        value: Any = request.path_params.get(name)
        return None if value is None else str(value)

    return owner
