"""Accounts and sessions: register, login, refresh, logout, password, me."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from core.bases import SessionDep, error_responses
from core.security import CurrentPrincipal
from services.auth.deps import (
    AccountsDep,
    ClientAddress,
    SessionsDep,
    ThrottleDep,
)
from services.auth.rules import login as flows
from services.auth.rules.login import user_id_of
from services.auth.schemas import (
    LoginRequest,
    Me,
    PasswordChangeRequest,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    UserPublic,
)

router = APIRouter(prefix="/auth", tags=["auth"])
NO_STORE = {"Cache-Control": "no-store"}


@router.post("/register", status_code=status.HTTP_201_CREATED,
             responses=error_responses(400, 409, 422, 503))
async def register(body: RegisterRequest, accounts: AccountsDep) -> UserPublic:
    """A new account with the `user` role (publishes auth.user_registered)."""
    user, roles = await accounts.register(body.email, body.password)
    return UserPublic(id=user.id, email=user.email, roles=roles)


@router.post("/login", responses=error_responses(400, 401, 422, 429, 503))
async def login(body: LoginRequest, accounts: AccountsDep, sessions: SessionsDep,
                throttle: ThrottleDep, client: ClientAddress, response: Response) -> TokenPair:
    """An access token (about 15 minutes) and a refresh token (rotated on each use)."""
    response.headers.update(NO_STORE)
    return await flows.login(accounts, sessions, throttle, email=body.email,
                             password=body.password, client=client)


@router.post("/refresh", responses=error_responses(400, 401, 422))
async def refresh(body: RefreshRequest, sessions: SessionsDep, response: Response) -> TokenPair:
    """A new pair for a valid refresh token, which is used up; presenting a used one again
    revokes its whole family."""
    response.headers.update(NO_STORE)
    return await sessions.refresh(body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT,
             responses=error_responses(400, 403, 422))
async def logout(body: RefreshRequest, principal: CurrentPrincipal, sessions: SessionsDep,
                 session: SessionDep) -> None:
    """Revoke the refresh token's family (the caller's own tokens only)."""
    await sessions.logout(session, body.refresh_token, user_id_of(principal))


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT,
             responses=error_responses(400, 403, 404, 422, 429, 503))
async def change_password(body: PasswordChangeRequest, principal: CurrentPrincipal,
                          accounts: AccountsDep, sessions: SessionsDep, throttle: ThrottleDep,
                          client: ClientAddress) -> None:
    """Change the caller's password; every session (refresh token) of theirs is revoked and
    auth.password_changed published."""
    await flows.change_password(accounts, sessions, throttle, principal,
                                current=body.current_password, new=body.new_password,
                                client=client)


@router.get("/me", responses=error_responses(404))
async def me(principal: CurrentPrincipal, accounts: AccountsDep) -> Me:
    """The caller. For a user, roles and permissions as they are now (the token's may be
    older); for a service client, what its token says."""
    if principal.kind == "service":
        return Me(id=principal.subject, kind="service", email=None,
                  roles=sorted(principal.roles), permissions=sorted(principal.permissions))
    user = await accounts.get(user_id_of(principal))
    roles, permissions = await accounts.claims_of(user.id)
    return Me(id=str(user.id), kind="user", email=user.email, roles=roles,
              permissions=permissions)
