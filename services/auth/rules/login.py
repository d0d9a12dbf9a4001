"""Logging in and changing a password: the two places a password is checked, both throttled.

One answer for a wrong password and an unknown email (same status, same body, and the same
work: an unknown email is verified against a dummy hash). The throttle is asked first, so a
slowed or locked account answers 429 whether the password was right or not.
"""

from __future__ import annotations

import uuid

from core.bases import ForbiddenError, NotFoundError, UnauthorizedError
from core.security import Principal
from services.auth.passwords import normalise_email
from services.auth.rules.accounts import Accounts
from services.auth.rules.sessions import Sessions
from services.auth.schemas import TokenPair
from services.auth.throttle import LoginThrottle


class InvalidCredentialsError(UnauthorizedError):
    """Wrong email or password (which one is not said)."""

    code = "invalid_credentials"
    default_message = "Wrong email or password"


class WrongCurrentPasswordError(ForbiddenError):
    """The current password given with a password change is wrong."""

    code = "invalid_credentials"
    default_message = "The current password is wrong"


async def login(accounts: Accounts, sessions: Sessions, throttle: LoginThrottle, *,
                email: str, password: str, client: str) -> TokenPair:
    email = normalise_email(email)
    await throttle.check(account=email, client=client)
    user = await accounts.by_email(email)
    verified = user.password_hash if user else None
    ok = await accounts.passwords.verify(verified, password)
    if not ok or user is None or verified is None:
        await throttle.failed(account=email, client=client)
        raise InvalidCredentialsError()
    await throttle.succeeded(account=email)
    if not await accounts.still_current(user, verified):  # changed while we verified
        raise InvalidCredentialsError()
    await accounts.rehash_if_needed(user, password)
    roles, permissions = await accounts.claims_of(user.id)
    return await sessions.start(accounts.session, user.id, roles, permissions)


async def change_password(accounts: Accounts, sessions: Sessions, throttle: LoginThrottle,
                          principal: Principal, *, current: str, new: str,
                          client: str) -> None:
    """Check `current`, store `new`, revoke every session of the user, publish
    auth.password_changed, all in one transaction. Access tokens already issued stay valid
    until they expire (minutes): they are not looked up per request."""
    user = await accounts.get(user_id_of(principal))
    await throttle.check(account=user.email, client=client)
    if not await accounts.passwords.verify(user.password_hash, current):
        await throttle.failed(account=user.email, client=client)
        raise WrongCurrentPasswordError()
    await accounts.set_password(user, new, current_password=current)
    await sessions.revoke_all(accounts.session, user.id)


def user_id_of(principal: Principal) -> uuid.UUID:
    """The user a user token is for; a service token has no account here."""
    if principal.kind != "user":
        raise ForbiddenError("service clients have no account")
    try:
        return uuid.UUID(principal.subject)
    except ValueError:
        raise NotFoundError("no such user") from None
