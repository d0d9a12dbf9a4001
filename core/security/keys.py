"""An issuer's signing keys: generation, rotation, retirement and the JWKS it publishes.

One key signs (the newest that is not retiring). `rotate()` makes a new signer and gives every
older key a retirement date one token lifetime (plus leeway) away, so every token it signed
still verifies until the last of them has expired; `prune()` then forgets retired keys. The
JWKS lists the public half of every key not yet retired, with `kid`, `alg` and `use`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms

from core.security.errors import SecurityError
from core.security.keystore import KeyStore, StoredKey
from core.security.types import VerificationKey

SIGNING_ALGORITHMS = ("EdDSA", "ES256", "RS256")
DEFAULT_ALGORITHM = "EdDSA"
RSA_BITS = 2048

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_KEY_TYPES: dict[str, type[Any]] = {
    "EdDSA": ed25519.Ed25519PrivateKey,
    "ES256": ec.EllipticCurvePrivateKey,
    "RS256": rsa.RSAPrivateKey,
}


def generate_private_key(alg: str) -> PrivateKey:
    """A fresh private key for `alg` (Ed25519, P-256 or RSA-2048)."""
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise SecurityError(f"unsupported signing algorithm {alg!r}; one of {SIGNING_ALGORITHMS}")


def new_kid(alg: str, now: float) -> str:
    """Readable and unique: `ed25519-20261128-3f9a...`; says what and when at a glance."""
    prefix = {"EdDSA": "ed25519", "ES256": "p256", "RS256": "rsa"}[alg]
    day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
    return f"{prefix}-{day}-{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A parsed signing key; `public_jwk` and `verification` are derived once."""

    kid: str
    alg: str
    private_key: PrivateKey
    created_at: float
    retire_at: float | None = None
    public_jwk: dict[str, Any] = field(init=False, repr=False, compare=False)
    verification: VerificationKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expected = _KEY_TYPES.get(self.alg)
        if expected is None or not isinstance(self.private_key, expected):
            raise SecurityError(f"key {self.kid}: not a {self.alg} key")
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey) and not isinstance(
                self.private_key.curve, ec.SECP256R1):
            raise SecurityError(f"key {self.kid}: ES256 needs a P-256 key")
        jwk: dict[str, Any] = get_default_algorithms()[self.alg].to_jwk(
            self.private_key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        object.__setattr__(self, "public_jwk", jwk)
        object.__setattr__(self, "verification", VerificationKey(self.kid, self.alg, PyJWK(jwk)))

    @classmethod
    def generate(cls, alg: str = DEFAULT_ALGORITHM, *, now: float) -> SigningKey:
        return cls(new_kid(alg, now), alg, generate_private_key(alg), now)

    @classmethod
    def from_stored(cls, stored: StoredKey) -> SigningKey:
        try:
            private = serialization.load_pem_private_key(stored.private_pem, password=None)
        except (ValueError, TypeError) as e:
            raise SecurityError(f"key {stored.kid}: unreadable PEM: {e}") from e
        return cls(stored.kid, stored.alg, private,  # type: ignore[arg-type]
                   stored.created_at, stored.retire_at)

    def to_stored(self) -> StoredKey:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        return StoredKey(self.kid, self.alg, pem, self.created_at, self.retire_at)

    def retired(self, now: float) -> bool:
        return self.retire_at is not None and self.retire_at <= now


class KeyManager:
    """The keys of one issuer process, backed by a KeyStore.

    Build with `await KeyManager.open(store)`: it loads the store and, when nothing can sign,
    makes the first key. Rotation and pruning are serialised by a lock; reads (`signer`,
    `jwks`, `get`) are plain memory and safe at any time. Several issuer replicas sharing a
    store should call `reload()` periodically to see each other's rotations.
    """

    def __init__(self, store: KeyStore, *, alg: str = DEFAULT_ALGORITHM,
                 max_token_ttl: float = 3600.0, leeway: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if alg not in SIGNING_ALGORITHMS:
            raise SecurityError(f"unsupported signing algorithm {alg!r}")
        if max_token_ttl <= 0 or leeway < 0:
            raise SecurityError("max_token_ttl must be > 0 and leeway >= 0")
        self.store = store
        self.alg = alg
        self.max_token_ttl = max_token_ttl
        self.leeway = leeway
        self.clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, store: KeyStore, **options: Any) -> KeyManager:
        manager = cls(store, **options)
        await manager.reload()
        if manager._current() is None:
            await manager.rotate()
        return manager

    async def reload(self) -> None:
        """Read the store again (another replica may have rotated)."""
        keys = [SigningKey.from_stored(stored) for stored in await self.store.load()]
        self._keys = {key.kid: key for key in keys}

    @property
    def signer(self) -> SigningKey:
        current = self._current()
        if current is None:
            raise SecurityError("no signing key: build the manager with KeyManager.open()")
        return current

    def _current(self) -> SigningKey | None:
        signers = [k for k in self._keys.values() if k.retire_at is None]
        return max(signers, key=lambda k: (k.created_at, k.kid), default=None)

    def keys(self) -> list[SigningKey]:
        """Every key still trusted (signing or retiring), newest first."""
        now = self.clock()
        live = [k for k in self._keys.values() if not k.retired(now)]
        return sorted(live, key=lambda k: k.created_at, reverse=True)

    def get(self, kid: str) -> VerificationKey | None:
        key = self._keys.get(kid)
        if key is None or key.retired(self.clock()):
            return None
        return key.verification

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The JWKS document: public parts only."""
        return {"keys": [dict(key.public_jwk) for key in self.keys()]}

    async def rotate(self, alg: str | None = None) -> SigningKey:
        """Make a new signer; the keys before it retire after the longest token lifetime."""
        async with self._lock:
            now = self.clock()
            new = SigningKey.generate(alg or self.alg, now=now)
            await self.store.save(new.to_stored())
            retire_at = now + self.max_token_ttl + self.leeway
            for key in list(self._keys.values()):
                if key.retire_at is None:
                    retiring = replace(key, retire_at=retire_at)
                    await self.store.save(retiring.to_stored())
                    self._keys[key.kid] = retiring
            self._keys[new.kid] = new
            return new

    async def prune(self) -> list[str]:
        """Forget retired keys, in memory and in the store; returns their kids."""
        async with self._lock:
            now = self.clock()
            gone = [kid for kid, key in self._keys.items() if key.retired(now)]
            for kid in gone:
                await self.store.delete(kid)
                del self._keys[kid]
            return gone
