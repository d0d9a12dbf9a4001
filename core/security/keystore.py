"""Where an issuer keeps its signing keys across restarts: the port and two adapters.

`FileKeyStore` is a directory of `<kid>.pem` (PKCS#8, unencrypted, mode 0600) and
`<kid>.json` (algorithm and dates); `MemoryKeyStore` is the same contract in a dict, for tests.
A database store (the auth service's own) implements the same three methods.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from core.security.errors import SecurityError

KID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A kid this package writes; also what a store accepts, so a kid is always a safe file name."""


class KeyStoreError(SecurityError):
    """The key store holds something unreadable or was handed a key it cannot store."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One signing key as stored: its private PEM and the dates that decide its role."""

    kid: str
    alg: str
    private_pem: bytes
    created_at: float
    """Seconds since the epoch. The newest key that is not retiring signs."""
    retire_at: float | None = None
    """After this instant the key is no longer published nor trusted; None while it signs."""


class KeyStore(Protocol):
    """Durable keys of one issuer.

    `save` replaces the key of the same kid atomically (a crash leaves the old or the new
    version, never half a key); `delete` of an absent kid is not an error; `load` returns every
    key saved and not deleted, in no particular order. Calls may run concurrently with reads.
    """

    async def load(self) -> list[StoredKey]: ...

    async def save(self, key: StoredKey) -> None: ...

    async def delete(self, kid: str) -> None: ...


def check_kid(kid: str) -> str:
    if not KID.match(kid):
        raise KeyStoreError(f"kid {kid!r} is not 1-64 characters of [A-Za-z0-9_-]")
    return kid


class MemoryKeyStore:
    """Keys in a dict: survives a new KeyManager, not a new process."""

    def __init__(self) -> None:
        self.keys: dict[str, StoredKey] = {}

    async def load(self) -> list[StoredKey]:
        return list(self.keys.values())

    async def save(self, key: StoredKey) -> None:
        self.keys[check_kid(key.kid)] = key

    async def delete(self, kid: str) -> None:
        self.keys.pop(kid, None)


class FileKeyStore:
    """Keys in `directory` (made 0700); PEMs are written 0600, then renamed into place."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    async def load(self) -> list[StoredKey]:
        return await asyncio.to_thread(self._load)

    async def save(self, key: StoredKey) -> None:
        await asyncio.to_thread(self._save, key)

    async def delete(self, kid: str) -> None:
        await asyncio.to_thread(self._delete, check_kid(kid))

    def _load(self) -> list[StoredKey]:
        if not self.directory.is_dir():
            return []
        keys = []
        for meta_path in sorted(self.directory.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_bytes())
                pem = (self.directory / f"{meta['kid']}.pem").read_bytes()
                keys.append(StoredKey(
                    kid=check_kid(str(meta["kid"])), alg=str(meta["alg"]), private_pem=pem,
                    created_at=float(meta["created_at"]),
                    retire_at=None if meta.get("retire_at") is None else float(meta["retire_at"])))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise KeyStoreError(f"unreadable key {meta_path.name}: {e}") from e
        return keys

    def _save(self, key: StoredKey) -> None:
        check_kid(key.kid)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        meta = {k: v for k, v in asdict(key).items() if k != "private_pem"}
        # The key first: metadata without its PEM would be an unreadable store.
        _write_atomic(self.directory / f"{key.kid}.pem", key.private_pem)
        _write_atomic(self.directory / f"{key.kid}.json", json.dumps(meta).encode())

    def _delete(self, kid: str) -> None:
        # Metadata first: a PEM without metadata is ignored by load, the reverse is an error.
        for suffix in (".json", ".pem"):
            (self.directory / f"{kid}{suffix}").unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a 0600 temporary file in the same directory, so the file
    is never readable by others, not even for a moment, and never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
