"""Who may do what to a resource: one list of permission dependencies per CRUD action.

A permission is a plain FastAPI dependency (see `core.bases.types.Permission`): it returns to
allow and raises ForbiddenError to deny. Until core.security lands, a check reads what it
needs from the request; afterwards it depends on the current principal instead::

    def admins_only(request: Request) -> None:
        if request.headers.get("x-role") != "admin":
            raise ForbiddenError("admins only")

    Permissions(delete=[admins_only], restore=[admins_only])

Actions without checks are open. `read_deleted` (the trash listing) defaults to the
`restore` checks: whoever may restore must be able to find what to restore.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from core.bases.errors import ForbiddenError
from core.bases.types import Permission

Action = Literal["create", "read", "update", "delete", "restore", "hard_delete", "read_deleted"]


@dataclass(frozen=True, slots=True)
class Permissions:
    """The permission dependencies of each action; all of an action's checks must pass."""

    create: Sequence[Permission] = ()
    read: Sequence[Permission] = ()
    update: Sequence[Permission] = ()
    delete: Sequence[Permission] = ()
    restore: Sequence[Permission] = ()
    hard_delete: Sequence[Permission] = ()
    read_deleted: Sequence[Permission] | None = None

    @classmethod
    def every(cls, *checks: Permission) -> Permissions:
        """The same checks on every action."""
        return cls(checks, checks, checks, checks, checks, checks, checks)

    def for_action(self, action: Action) -> list[Permission]:
        if action == "read_deleted":
            return list(self.restore if self.read_deleted is None else self.read_deleted)
        checks: Sequence[Permission] = getattr(self, action)
        return list(checks)


def allow_if(
    predicate: Callable[[Request], bool | Awaitable[bool]], reason: str = "Not allowed"
) -> Permission:
    """A permission from a predicate on the request (sync or async)."""

    async def check(request: Request) -> None:
        allowed = predicate(request)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            raise ForbiddenError(reason)

    return check


def deny(reason: str = "Not allowed") -> Permission:
    """A permission that always refuses: to close an action entirely."""

    def check() -> None:
        raise ForbiddenError(reason)

    return check
