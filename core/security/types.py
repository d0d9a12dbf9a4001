"""The vocabulary of core.security: who is calling, with which key, and the ports behind them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from jwt import PyJWK

Kind = Literal["user", "service"]
KINDS: frozenset[str] = frozenset({"user", "service"})
ACCESS_TOKEN_TYPE = "at+jwt"
"""The `typ` header of an access token (RFC 9068 §2.1): a verifier refuses any other JWT the
same keys may sign, so no other kind of token passes for an access token."""

TokenProvider: TypeAlias = Callable[[], Awaitable[str]]
"""`await token()` gives a bearer token for this service's own calls (service identity)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller of a request. `token` is the raw bearer token, for forwarding."""

    subject: str
    kind: Kind
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()
    token: str = field(default="", repr=False)
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def has_permission(self, permission: str) -> bool:
        return permission in self.permissions

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def is_user(self, user_id: str) -> bool:
        """Whether this is the user `user_id` themself. Compare this, never the bare
        subject: a service client's subject is its name, a namespace apart from user ids."""
        return self.kind == "user" and self.subject == user_id


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key as a verifier holds it: parsed once, bound to one algorithm."""

    kid: str
    alg: str
    jwk: PyJWK


class KeySource(Protocol):
    """Where a verifier finds the public key of a `kid`.

    `get` returns None for a kid it does not know (after whatever refresh it allows itself),
    and raises core.security.errors.KeysUnavailableError only when it has no keys at all. It is
    called on every request: a known kid must be answered from memory. Safe for concurrent
    use from one event loop.
    """

    async def get(self, kid: str) -> VerificationKey | None: ...
