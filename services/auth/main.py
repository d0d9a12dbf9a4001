"""Assembles the auth service: `create_app()` builds it (nothing is built at import)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.app import ServiceRuntime, create_service
from core.security import Security, security_from_settings
from core.tasks import cancel_and_wait, periodically
from services.auth.config import AuthSettings
from services.auth.events import TOPIC, PasswordChanged, RolesChanged, UserRegistered, registry
from services.auth.keys import ISSUER, key_manager, keys_hook
from services.auth.models import Base
from services.auth.passwords import PASSWORDS, Passwords
from services.auth.routers import ROUTERS
from services.auth.throttle import THROTTLE, FailureStore, LoginThrottle, ThrottleUnavailableError
from services.auth.throttle.database import DatabaseFailureStore
from services.auth.throttle.redis import RedisFailureStore

SERVICE_DIR = Path(__file__).resolve().parent
log = logging.getLogger(__name__)


def create_app(settings: AuthSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    """The auth service. It verifies its own tokens from its own keys (no JWKS over HTTP):
    the KeyManager is made here, empty, and filled by its hook (`ISSUER`) at start-up."""
    cfg = settings or AuthSettings()
    keys = key_manager(cfg)
    return create_service(
        "auth", metadata=Base.metadata, service_dir=SERVICE_DIR, events=registry(),
        routers=ROUTERS, settings=cfg,
        publishes={TOPIC: [UserRegistered, RolesChanged, PasswordChanged]},
        security=security or security_from_settings(cfg, local_keys=keys),
        hooks={ISSUER: keys_hook(keys, cfg), PASSWORDS: passwords, THROTTLE: throttle},
        description="Accounts, tokens (JWT, JWKS), RBAC, service identities.")


@asynccontextmanager
async def passwords(runtime: ServiceRuntime) -> AsyncIterator[Passwords]:
    yield passwords_from(runtime.settings_as(AuthSettings))


def passwords_from(cfg: AuthSettings) -> Passwords:
    return Passwords(time_cost=cfg.argon2_time_cost, memory_kib=cfg.argon2_memory_kib,
                     parallelism=cfg.argon2_parallelism,
                     concurrency=cfg.password_hash_concurrency)


@asynccontextmanager
async def throttle(runtime: ServiceRuntime) -> AsyncIterator[LoginThrottle]:
    cfg = runtime.settings_as(AuthSettings)
    store: FailureStore = (RedisFailureStore(cfg.redis_url) if cfg.redis_url
                           else DatabaseFailureStore.from_url(cfg.database_url))
    made = LoginThrottle(store, cfg.account_policy(), cfg.client_policy())
    pruning = (asyncio.create_task(_prune(store, made), name="auth:prune-failures")
               if isinstance(store, DatabaseFailureStore) else None)
    try:
        yield made
    finally:
        await cancel_and_wait(pruning)
        await made.close()


PRUNE_INTERVAL_SECONDS = 300.0


async def _prune(store: DatabaseFailureStore, throttle: LoginThrottle) -> None:
    """Redis forgets a key by its TTL; the database store is told to, every few minutes."""
    keep = max(policy.ttl_seconds for policy in throttle.policies.values())

    async def prune() -> None:
        try:
            pruned = await store.prune(time.time() - keep)
        except ThrottleUnavailableError:
            return  # the database is away; the next round tries again
        if pruned:
            log.info("forgot %d stale login-failure keys", pruned)

    await periodically(prune, PRUNE_INTERVAL_SECONDS, first="after_interval", report="streak",
                       log=log, failed="pruning login-failure keys failed")
