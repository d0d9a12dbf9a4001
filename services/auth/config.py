"""The auth service's settings: the base settings plus tokens, passwords and throttling."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from core.config import LOCAL_DIR, Settings
from services.auth.throttle.policy import ThrottlePolicy


class AuthSettings(Settings):
    """Environment variables of the auth service (upper-cased field names)."""

    service_name: str = "auth"
    service_port: int = Field(default=8001, ge=1, le=65535)
    jwt_keys_dir: str = str(Path(LOCAL_DIR) / "auth-keys")
    jwt_signing_algorithm: str = "EdDSA"
    """Algorithm of keys made at first start; `rotate-keys --alg` picks another."""
    jwt_keys_reload_seconds: float = Field(default=30.0, gt=0)
    """How often the key folder is read again (another instance or `rotate-keys` may have
    rotated) and retired keys pruned."""

    access_token_ttl: int = Field(default=900, ge=60, le=3600)
    refresh_token_ttl: int = Field(default=14 * 24 * 3600, ge=300)
    service_token_ttl: int = Field(default=900, ge=60, le=3600)

    # Argon2id: 2 passes over 32 MiB, one lane: ~50-75 ms per hash on this machine's cores
    # (above OWASP's 19 MiB/t=2 floor). Tests lower them through the environment.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=32 * 1024, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    password_hash_concurrency: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2),
                                           ge=1)
    """Hashes computed at once (threads); the rest wait. Bounds CPU and memory
    (concurrency x ARGON2_MEMORY_KIB) under a login flood."""

    # Failed logins per account (email) and per client (IP address).
    login_window_seconds: float = Field(default=900.0, gt=0)
    account_slow_after: int = Field(default=5, ge=1)
    account_lock_after: int = Field(default=10, ge=1)
    client_slow_after: int = Field(default=20, ge=1)
    client_lock_after: int = Field(default=100, ge=1)
    login_slow_seconds: float = Field(default=1.0, gt=0)
    """First required wait once slowed down; doubles with each further failure."""
    login_slow_max_seconds: float = Field(default=60.0, gt=0)
    login_lock_seconds: float = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> AuthSettings:
        if self.account_lock_after < self.account_slow_after:
            raise ValueError("ACCOUNT_LOCK_AFTER must be >= ACCOUNT_SLOW_AFTER")
        if self.client_lock_after < self.client_slow_after:
            raise ValueError("CLIENT_LOCK_AFTER must be >= CLIENT_SLOW_AFTER")
        return self

    @property
    def max_token_ttl(self) -> float:
        """The longest a token signed by a key may outlive its key's rotation: a token's TTL,
        plus the time this instance may keep signing with a key another process already
        rotated (until its next reload). Keys retire that long after a rotation."""
        return max(self.access_token_ttl, self.service_token_ttl) + self.jwt_keys_reload_seconds

    def account_policy(self) -> ThrottlePolicy:
        return ThrottlePolicy("account", self.login_window_seconds, self.account_slow_after,
                              self.account_lock_after, self.login_slow_seconds,
                              self.login_slow_max_seconds, self.login_lock_seconds)

    def client_policy(self) -> ThrottlePolicy:
        return ThrottlePolicy("client", self.login_window_seconds, self.client_slow_after,
                              self.client_lock_after, self.login_slow_seconds,
                              self.login_slow_max_seconds, self.login_lock_seconds)
