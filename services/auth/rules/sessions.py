"""Sessions: access tokens with rotating refresh tokens, reuse detection, revocation.

A refresh token is 32 random bytes (urlsafe text) and is stored only as its SHA-256. A login
starts a family; a refresh marks the presented token used and hands out its child in the same
family. Presenting a used token again means two parties hold it (the client and a thief), so
the whole family is revoked, the newest token included: both parties must log in again.

Marking a token used is one conditional UPDATE (`... WHERE used_at IS NULL`), checked by what
it returns, so of two concurrent refreshes of one token exactly one wins; the other is a reuse
like any other (a race and a replay cannot be told apart).

Rotation and revocation take the user's row lock first (services.auth.locks), so they run one
after the other per user: a revocation waits for a refresh in flight to commit its child, and
then revokes the child too; a refresh waiting on a revocation then finds its token revoked.
Without it, under READ COMMITTED, a revocation does not see a child not yet committed, and a
thief refreshing in a loop kept the session through most password changes.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases import UnauthorizedError
from core.db import Database, utcnow
from core.security import TokenIssuer
from services.auth.config import AuthSettings
from services.auth.locks import lock
from services.auth.models import RefreshToken, User
from services.auth.rules.accounts import claims_of
from services.auth.schemas import TokenPair


class InvalidRefreshTokenError(UnauthorizedError):
    """The refresh token is unknown, expired, used or revoked: log in again."""

    code = "invalid_refresh_token"
    default_message = "The refresh token is not valid; log in again"


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class Sessions:
    """Issues and rotates token pairs; one per app, safe for concurrent requests."""

    def __init__(self, database: Database, issuer: TokenIssuer, settings: AuthSettings) -> None:
        self.database = database
        self.issuer = issuer
        self.settings = settings

    def access_token(self, user_id: uuid.UUID, roles: list[str], permissions: list[str]) -> str:
        return self.issuer.issue(str(user_id), self.settings.jwt_audience,
                                 self.settings.access_token_ttl, roles=roles,
                                 permissions=permissions, kind="user")

    async def start(self, session: AsyncSession, user_id: uuid.UUID, roles: list[str],
                    permissions: list[str]) -> TokenPair:
        """A login: a new family, in the caller's transaction."""
        raw = await self._add(session, user_id, uuid.uuid4(), None, utcnow())
        return self._pair(user_id, roles, permissions, raw)

    async def refresh(self, raw: str) -> TokenPair:
        """The presented token's child and a fresh access token (with the user's roles and
        permissions as they are now), or InvalidRefreshTokenError; a reuse revokes the family
        (committed) before the refusal."""
        now = utcnow()
        hashed = token_hash(raw)
        async with self.database.transaction() as session:
            await lock(session, User, select(User.id).join(
                RefreshToken, RefreshToken.user_id == User.id).where(
                RefreshToken.token_hash == hashed))
            claimed = (await session.execute(
                update(RefreshToken)
                .where(RefreshToken.token_hash == hashed,
                       RefreshToken.used_at.is_(None), RefreshToken.revoked_at.is_(None),
                       RefreshToken.expires_at > now)
                .values(used_at=now)
                .returning(RefreshToken.id, RefreshToken.user_id, RefreshToken.family_id)
            )).first()
            if claimed is not None:
                token_id, user_id, family_id = claimed
                roles, permissions = await claims_of(session, user_id)
                child = await self._add(session, user_id, family_id, token_id, now)
                return self._pair(user_id, roles, permissions, child)
        await self._refuse(raw, now)
        raise InvalidRefreshTokenError()

    async def _refuse(self, raw: str, now: datetime) -> None:
        """Why the token did not refresh; a used one revokes its family, for good."""
        async with self.database.transaction() as session:
            row = (await session.execute(
                select(RefreshToken.family_id, RefreshToken.used_at, RefreshToken.user_id)
                .where(RefreshToken.token_hash == token_hash(raw)))).first()
            if row is not None and row.used_at is not None:
                await self._revoke(session, row.user_id,
                                   RefreshToken.family_id == row.family_id, now)

    async def logout(self, session: AsyncSession, raw: str, user_id: uuid.UUID) -> None:
        """Revoke the token's family, if it is one of `user_id`'s (else nothing: a logout
        reveals nothing about other users' tokens)."""
        row = (await session.execute(
            select(RefreshToken.family_id).where(RefreshToken.token_hash == token_hash(raw),
                                                 RefreshToken.user_id == user_id))).first()
        if row is not None:
            await self._revoke(session, user_id, RefreshToken.family_id == row.family_id,
                               utcnow())

    async def revoke_all(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        """Every family of the user (a password change)."""
        await self._revoke(session, user_id, RefreshToken.user_id == user_id, utcnow())

    async def _revoke(self, session: AsyncSession, user_id: uuid.UUID, which: object,
                      now: datetime) -> None:
        """Revoke `which` of `user_id`'s tokens, under the user's lock (see the module)."""
        await lock(session, User, select(User.id).where(User.id == user_id))
        await session.execute(update(RefreshToken)
                              .where(which, RefreshToken.revoked_at.is_(None))  # type: ignore[arg-type]
                              .values(revoked_at=now))

    async def _add(self, session: AsyncSession, user_id: uuid.UUID, family_id: uuid.UUID,
                   parent_id: uuid.UUID | None, now: datetime) -> str:
        raw = secrets.token_urlsafe(32)
        session.add(RefreshToken(
            id=uuid.uuid4(), token_hash=token_hash(raw), user_id=user_id, family_id=family_id,
            parent_id=parent_id, created_at=now,
            expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl)))
        await session.flush()
        return raw

    def _pair(self, user_id: uuid.UUID, roles: list[str], permissions: list[str],
              refresh: str) -> TokenPair:
        return TokenPair(access_token=self.access_token(user_id, roles, permissions),
                         refresh_token=refresh, expires_in=self.settings.access_token_ttl)
