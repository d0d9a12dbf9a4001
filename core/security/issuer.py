"""Issuing tokens with the current signer of a KeyManager (the auth service's side)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jwt

from core.security.errors import SecurityError
from core.security.keys import KeyManager
from core.security.types import ACCESS_TOKEN_TYPE, KINDS, Kind

RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "kind", "roles", "permissions"})


class TokenIssuer:
    """Signs access tokens (header `typ: at+jwt`, RFC 9068) for `issuer`. A token lives at
    most the manager's `max_token_ttl`, the promise key retirement is built on."""

    def __init__(self, keys: KeyManager, issuer: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.issuer = issuer
        self.clock = clock

    def issue(
        self,
        subject: str,
        audience: str | Iterable[str],
        ttl: float,
        *,
        roles: Iterable[str] = (),
        permissions: Iterable[str] = (),
        kind: Kind = "user",
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        if not subject:
            raise SecurityError("a token needs a subject")
        if not 1 <= ttl <= self.keys.max_token_ttl:
            raise SecurityError(
                f"ttl must be in [1, {self.keys.max_token_ttl}] s: keys retire after that")
        if kind not in KINDS:
            raise SecurityError(f"kind must be one of {sorted(KINDS)}")
        clash = RESERVED_CLAIMS & set(extra or {})
        if clash:
            raise SecurityError(f"extra claims may not set {sorted(clash)}")
        now = int(self.clock())
        signer = self.keys.signer
        payload: dict[str, Any] = {
            **(extra or {}),
            "iss": self.issuer,
            "sub": subject,
            "aud": audience if isinstance(audience, str) else list(audience),
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl),
            "jti": uuid.uuid4().hex,
            "kind": kind,
            "roles": sorted(set(roles)),
            "permissions": sorted(set(permissions)),
        }
        return jwt.encode(payload, signer.private_key, algorithm=signer.alg,
                          headers={"kid": signer.kid, "typ": ACCESS_TOKEN_TYPE})
