"""Typed settings from the environment, loaded once per process and handed down.

Every default works on a laptop with `make up`; outside development, unsafe values fail fast.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """The slice of settings the Kafka client needs; built by `Settings.kafka()`."""

    bootstrap_servers: str
    client_id: str
    consumer_group: str
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    extra: dict[str, str | int | float | bool] = field(default_factory=dict)
    replication_factor: int = 1
    """For topics the messaging layer creates for itself (request-reply's reply topics)."""


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
            replication_factor=self.kafka_topic_replication_factor,
        )


def _short_id() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
