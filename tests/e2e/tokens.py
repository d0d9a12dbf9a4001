"""Bad tokens made from a good one, for checking that every service refuses them.

Expired and wrong-audience tokens must carry a valid signature to test anything, so they are
signed with auth's own key, read from its key folder (`JWT_KEYS_DIR`, where the stack keeps
it); the key is picked by the good token's `kid`.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt

from core.security import ACCESS_TOKEN_TYPE, FileKeyStore
from core.security.keys import SigningKey, generate_private_key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _part(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


def header_and_claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    return _part(head), _part(body)


async def auth_signing_key(keys_dir: Path, kid: str) -> SigningKey:
    stored = {key.kid: key for key in await FileKeyStore(keys_dir).load()}
    assert kid in stored, (f"auth signed with kid {kid!r}, which is not in its JWT_KEYS_DIR "
                           f"{keys_dir} (found {sorted(stored)})")
    return SigningKey.from_stored(stored[kid])


async def forged(good: str, keys_dir: Path) -> dict[str, str]:
    """Tokens every service must refuse with 401, by what is wrong with them."""
    header, claims = header_and_claims(good)
    key = await auth_signing_key(keys_dir, header["kid"])
    now = int(time.time())

    def signed(with_claims: dict[str, Any], private: Any = key.private_key) -> str:
        return jwt.encode(with_claims, private, algorithm=key.alg,
                          headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})

    head, body, signature = good.split(".")
    elevated = {**claims, "permissions": [*claims.get("permissions", []), "rbac:manage",
                                          "users:write", "drivers:write"]}
    return {
        "expired": signed({**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}),
        "tampered": f"{head}.{_b64(json.dumps(elevated).encode())}.{signature}",
        "alg=none": f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}."
                    f"{body}.",
        "wrong key": signed(claims, generate_private_key(key.alg)),
        "wrong audience": signed({**claims, "aud": "someone-else"}),
        "wrong issuer": signed({**claims, "iss": "not-auth"}),
        "garbage": "not.a.token",
    }
