"""Service clients: identities for service-to-service calls (OAuth2 client credentials).

The client id is the client's name (readable in logs, the `sub` of its tokens); the secret is
32 random bytes, shown once, stored as its SHA-256 and compared in constant time.

A client id is never a UUID: user ids are, and a service token whose subject equals a user's
id must not pass for that user anywhere a check compares subjects without the kind (the
verifiers check the kind too: core.security.Principal.is_user).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases import ConflictError, ValidationError
from services.auth.models import ClientPermission, ServiceClient
from services.auth.schemas import ClientCreated

_NO_CLIENT = hashlib.sha256(b"no such client").hexdigest()


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Clients:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, name: str, permissions: Iterable[str]) -> ClientCreated:
        if _is_uuid(name):
            raise ValidationError.for_field(
                "name", "may not be a UUID: user ids are, and a client id is never a user's",
                code="reserved")
        if await self.session.get(ServiceClient, name) is not None:
            raise ConflictError(f"client {name} exists")
        secret = secrets.token_urlsafe(32)
        granted = sorted(set(permissions))
        self.session.add(ServiceClient(client_id=name, secret_hash=secret_hash(secret)))
        await self.session.flush()
        self.session.add_all(ClientPermission(client_id=name, permission=p) for p in granted)
        await self.session.flush()
        return ClientCreated(client_id=name, client_secret=secret, permissions=granted)

    async def authenticate(self, client_id: str, secret: str) -> list[str] | None:
        """The client's permissions when the secret is right; None otherwise (unknown or
        wrong: one answer, and the same comparison either way)."""
        client = await self.session.get(ServiceClient, client_id) if len(client_id) <= 64 \
            else None
        stored = client.secret_hash if client is not None else _NO_CLIENT
        if not hmac.compare_digest(stored, secret_hash(secret)) or client is None:
            return None
        rows = await self.session.execute(
            select(ClientPermission.permission).where(ClientPermission.client_id == client_id)
            .order_by(ClientPermission.permission))
        return list(rows.scalars())


def _is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True
