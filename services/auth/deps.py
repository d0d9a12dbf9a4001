"""The auth service's route dependencies, as `Annotated` aliases over the running service's
parts (its settings, and its hooks' token issuer, password hasher and login throttle, by
typed key) and the request's session."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.app import RuntimeDep
from core.bases import DatabaseDep, OutboxDep, SessionDep
from core.security import TokenIssuer
from services.auth.config import AuthSettings
from services.auth.keys import ISSUER
from services.auth.passwords import PASSWORDS, Passwords
from services.auth.rules.accounts import Accounts
from services.auth.rules.rbac import Rbac
from services.auth.rules.sessions import Sessions
from services.auth.throttle import THROTTLE, LoginThrottle

# `async def` though they never await: FastAPI runs a plain `def` dependency in a thread.


async def get_settings(runtime: RuntimeDep) -> AuthSettings:
    return runtime.settings_as(AuthSettings)


async def get_issuer(runtime: RuntimeDep) -> TokenIssuer:
    return runtime[ISSUER]


async def get_passwords(runtime: RuntimeDep) -> Passwords:
    return runtime[PASSWORDS]


async def get_throttle(runtime: RuntimeDep) -> LoginThrottle:
    return runtime[THROTTLE]


SettingsDep = Annotated[AuthSettings, Depends(get_settings)]
IssuerDep = Annotated[TokenIssuer, Depends(get_issuer)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
ThrottleDep = Annotated[LoginThrottle, Depends(get_throttle)]


async def get_accounts(session: SessionDep, outbox: OutboxDep,
                       passwords: PasswordsDep) -> Accounts:
    return Accounts(session, outbox, passwords)


async def get_sessions(database: DatabaseDep, issuer: IssuerDep,
                       settings: SettingsDep) -> Sessions:
    return Sessions(database, issuer, settings)


async def get_rbac(session: SessionDep, outbox: OutboxDep) -> Rbac:
    return Rbac(session, outbox)


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
RbacDep = Annotated[Rbac, Depends(get_rbac)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]


def client_address(request: Request) -> str:
    """The caller's address, the key of the per-client throttle: behind the gateway, the
    client's from the gateway's X-Forwarded-For when the gateway's address is among
    FORWARDED_ALLOW_IPS (core.config; loopback by default, the container networks in the
    image), else the gateway's own, one key for every client (tests/e2e/test_client_address)."""
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(client_address)]
