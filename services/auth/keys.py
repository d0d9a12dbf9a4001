"""The signing keys: a KeyManager over the key folder, made at app build time (no I/O) so the
service can verify its own tokens with it, filled in by a hook at start-up, and kept in step
with the folder by a background task (another instance, or `rotate-keys`, may rotate)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.app import Hook, ServiceRuntime
from core.runtime import RuntimeKey
from core.security import FileKeyStore, KeyManager, SecurityError, TokenIssuer
from core.tasks import cancel_and_wait, periodically
from services.auth.config import AuthSettings

log = logging.getLogger(__name__)

ISSUER = RuntimeKey("token_issuer", TokenIssuer)
"""Signs the service's tokens with the current key (what `keys_hook` yields)."""


def key_manager(settings: AuthSettings) -> KeyManager:
    """The service's keys, not yet read: `open_keys` (or the hook) reads them."""
    return KeyManager(FileKeyStore(settings.jwt_keys_dir), alg=settings.jwt_signing_algorithm,
                      max_token_ttl=settings.max_token_ttl,
                      leeway=settings.jwt_leeway_seconds)


async def open_keys(keys: KeyManager) -> KeyManager:
    """Read the folder; make the first key when nothing can sign (KeyManager.open's rule,
    on a manager that already exists)."""
    await keys.reload()
    try:
        keys.signer  # noqa: B018 - raises when no key signs
    except SecurityError:
        key = await keys.rotate()
        log.info("no signing key in the folder: made %s", key.kid)
    return keys


def keys_hook(keys: KeyManager, settings: AuthSettings) -> Hook[TokenIssuer]:
    """Yields the TokenIssuer; reloads and prunes the folder every JWT_KEYS_RELOAD_SECONDS."""

    @asynccontextmanager
    async def hook(runtime: ServiceRuntime) -> AsyncIterator[TokenIssuer]:
        await open_keys(keys)
        # A half-written folder must not stop signing: logged, tried again next round.
        task = asyncio.create_task(
            periodically(lambda: _maintain(keys), settings.jwt_keys_reload_seconds,
                         first="after_interval", log=log,
                         failed="reloading the key folder failed; keeping the keys in memory"),
            name="auth-keys")
        try:
            yield TokenIssuer(keys, settings.jwt_issuer)
        finally:
            await cancel_and_wait(task)

    return hook


async def _maintain(keys: KeyManager) -> None:
    """Read the folder again (another instance or `rotate-keys` may have rotated) and prune
    retired keys."""
    await keys.reload()
    gone = await keys.prune()
    if gone:
        log.info("retired keys pruned: %s", ", ".join(gone))
