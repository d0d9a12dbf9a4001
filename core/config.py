"""Typed settings from the environment, loaded once per process and handed down.

Every default works on a laptop with `make up`; outside development, unsafe values fail fast.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """The slice of settings the Kafka client needs; built by `Settings.kafka()`."""

    bootstrap_servers: str
    client_id: str
    consumer_group: str
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    service_name: str = ""
    """Written into the envelope of events published without one."""
    topic_partitions: int = 3
    topic_replication_factor: int = 1
    """How topics this process creates (subscribed, dead-letter, reply topics) are made."""
    extra: dict[str, str | int | float | bool] = field(default_factory=dict)


class Settings(BaseSettings):
    """Process settings; names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    service_name: str = "service"
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{_short_id()}")
    log_level: str = "INFO"

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_consumer_group: str | None = None
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_topic_replication_factor: int = Field(default=1, ge=1)

    database_url: str = "sqlite+aiosqlite:///./service.db"
    redis_url: str | None = None

    # --- security (core.security): verifying tokens, and this service's own identity ---
    jwt_issuer: str = "auth"
    """The `iss` every accepted token must carry (the auth service's issuer name)."""
    jwt_audience: str = "platform"
    """The `aud` a token must be for (this service or the platform as a whole)."""
    jwks_url: str | None = None
    """Where the auth service publishes its public keys; unset: this service verifies nothing."""
    jwt_algorithms: list[str] = ["EdDSA", "ES256", "RS256"]
    """The allow-list (JSON list in the environment); asymmetric algorithms only."""
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    jwks_refresh_seconds: float = Field(default=300.0, gt=0)
    jwks_min_refresh_seconds: float = Field(default=5.0, ge=0)
    """Least time between two JWKS fetches caused by unknown kids (a flood costs one)."""
    jwt_keys_dir: str = "./.keys"
    """The issuer's signing keys (core.security.keystore.FileKeyStore); auth service only."""
    service_client_id: str | None = None
    service_client_secret: SecretStr | None = None
    auth_token_url: str | None = None
    """OAuth2 client-credentials endpoint this service gets its own tokens from."""
    # --- end of security ---

    @model_validator(mode="after")
    def _safe_outside_development(self) -> Settings:
        if self.environment == "production":
            if self.database_url.startswith("sqlite"):
                raise ValueError("DATABASE_URL must name a server database in production")
            if self.kafka_topic_replication_factor < 3:
                raise ValueError("KAFKA_TOPIC_REPLICATION_FACTOR must be >= 3 in production")
        return self

    def kafka(self) -> KafkaConfig:
        return KafkaConfig(
            bootstrap_servers=self.kafka_bootstrap_servers,
            client_id=f"{self.service_name}-{self.instance_id}",
            consumer_group=self.kafka_consumer_group or self.service_name,
            auto_offset_reset=self.kafka_auto_offset_reset,
            service_name=self.service_name,
            topic_partitions=self.kafka_topic_partitions,
            topic_replication_factor=self.kafka_topic_replication_factor,
        )


def _short_id() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
