"""Typed settings from the environment, loaded once per process and handed down.

Every default works on a laptop with `make up`; outside development, unsafe values fail fast.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.service_registry.base import RegistryError
from core.service_registry.dns import DEFAULT_TEMPLATE, check_template
from core.service_registry.static import base_url, parse_static
from core.service_registry.trust import AllowedNetworks

LOCAL_DIR = ".local"
"""Where a process keeps its local state when no setting names a place (the SQLite file),
relative to the folder it runs in; `make up` puts its own under the same name."""


def local_database_url(service_name: str) -> str:
    """The default `DATABASE_URL`: `./.local/<service>.db`. `Database` creates the folder
    (0700) and the file (0600) on first use."""
    return f"sqlite+aiosqlite:///./{LOCAL_DIR}/{service_name}.db"


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
    service_name: str = Field(default="service", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    """Names the process's consumer group, client ids, registry entry and default SQLite file,
    so only what a Kafka topic name and a file name both allow: no `/`, no leading dot."""
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{_short_id()}")
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    """`auto`: readable lines in a terminal, JSON lines otherwise (core.logs)."""
    access_log: bool = False
    """uvicorn's line per request, as JSON with the method, route and status (core.logs)."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_consumer_group: str | None = None
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_topic_replication_factor: int = Field(default=1, ge=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT")
    """How clients reach the brokers; SASL gives each service the principal its Kafka ACLs
    name (infra/kafka/acls.py)."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    """The CA file that signed the brokers' certificates (SSL, SASL_SSL)."""

    database_url: str = Field(default_factory=lambda data: local_database_url(
        data["service_name"]))
    """Unset: a SQLite file named after the service in `LOCAL_DIR` (`local_database_url`), so
    a first run needs no setup and each service on one machine has its own file."""
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

    forwarded_allow_ips: str = "127.0.0.1,::1"
    """The proxies whose `X-Forwarded-For` this service believes (the gateway): addresses and
    networks, comma-separated, as uvicorn reads them. Loopback, where `make up` runs the
    gateway; a container deployment names the gateway's network (the Dockerfile ships one),
    or every client behind the gateway has the gateway's address here (one login throttle
    bucket for all of them)."""
    service_url: str | None = None
    """The URL other services reach this instance at; else http://SERVICE_HOST:SERVICE_PORT."""
    service_host: str = "127.0.0.1"
    service_port: int = Field(default=8000, ge=1, le=65535)
    service_version: str = "0.0.0"

    # --- tracing (core.tracing): the standard OpenTelemetry variables; off unless set ---
    otel_traces_exporter: str = "none"
    """Comma-separated: `otlp` (OTEL_EXPORTER_OTLP_* say where), `console`, `none`."""
    otel_traces_file: str | None = None
    """A JSON-lines file each span is appended to (`python -m core traces show` reads it)."""
    otel_service_name: str | None = None
    """The `service.name` spans carry; else SERVICE_NAME."""

    registry_backend: Literal["kafka", "static", "dns"] = "kafka"
    registry_topic: str = "platform.registry"
    registry_ttl: float = Field(default=15.0, gt=0)
    """Seconds without a heartbeat after which an instance is no longer discovered."""
    registry_heartbeat_interval: float = Field(default=3.0, gt=0)
    registry_grace: float = Field(default=600.0, gt=0)
    """Seconds without a heartbeat after which a reader tombstones the instance's record."""
    registry_start_timeout: float = Field(default=30.0, gt=0)
    registry_static: str = ""
    """`service=url[,url];service=url`: the instances, when REGISTRY_BACKEND=static."""
    registry_dns_template: str = DEFAULT_TEMPLATE
    registry_dns_namespace: str = "default"
    registry_dns_port: int = Field(default=8000, ge=1, le=65535)
    registry_dns_scheme: Literal["http", "https"] = "http"
    registry_dns_refresh: float = Field(default=5.0, gt=0)
    registry_signing_key: SecretStr | None = None
    """The key the platform's services sign registry records with (HMAC, >= 32 bytes); a
    record not signed with it is refused. Required in production with the Kafka backend."""
    registry_signing_key_file: str | None = None
    """The same, from a file (one key a line: the first signs, all verify, for rotation)."""
    registry_allowed_networks: str = ""
    """Comma-separated networks, host names or .domains a registered instance's address must
    be in (e.g. `127.0.0.0/8,::1`); empty: anywhere."""
    registry_clock_skew: float = Field(default=5.0, ge=0)
    """Seconds a signed record is believed past its expiry (clocks between hosts differ)."""

    @model_validator(mode="after")
    def _safe_outside_development(self) -> Settings:
        if self.environment == "production":
            if self.database_url.startswith("sqlite"):
                raise ValueError("DATABASE_URL must name a server database in production")
            if self.kafka_topic_replication_factor < 3:
                raise ValueError("KAFKA_TOPIC_REPLICATION_FACTOR must be >= 3 in production")
            if (self.registry_backend == "kafka" and self.registry_signing_key is None
                    and not self.registry_signing_key_file):
                raise ValueError("REGISTRY_SIGNING_KEY or REGISTRY_SIGNING_KEY_FILE must be set "
                                 "in production: anyone who can write to the registry topic "
                                 "could otherwise announce an instance")
        return self

    @model_validator(mode="after")
    def _kafka_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
                self.kafka_sasl_username and self.kafka_sasl_password is not None):
            raise ValueError("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are needed with "
                             f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}")
        return self

    @model_validator(mode="after")
    def _forwarded(self) -> Settings:
        """uvicorn takes an entry it cannot parse for a name no peer has, silently: refused
        here by name. `*` lets any client choose its own address: not in production."""
        for entry in (e.strip() for e in self.forwarded_allow_ips.split(",")):
            if entry == "*":
                if self.environment == "production":
                    raise ValueError("FORWARDED_ALLOW_IPS=* trusts every peer's X-Forwarded-For:"
                                     " name the gateway's network in production")
                continue
            try:
                ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)
            except ValueError:
                raise ValueError(f"FORWARDED_ALLOW_IPS: {entry!r} is not an address or a network"
                                 " (host bits must be zero)") from None
        return self

    @model_validator(mode="after")
    def _registry(self) -> Settings:
        """Registry settings that would misbehave quietly are refused at start, by name."""
        if self.registry_heartbeat_interval * 3 > self.registry_ttl:
            raise ValueError(
                f"REGISTRY_HEARTBEAT_INTERVAL ({self.registry_heartbeat_interval:g}s) must be at "
                f"most a third of REGISTRY_TTL ({self.registry_ttl:g}s): a live instance must "
                "survive two lost heartbeats")
        if self.registry_grace < 2 * self.registry_ttl:
            raise ValueError(
                f"REGISTRY_GRACE ({self.registry_grace:g}s) must be at least twice REGISTRY_TTL "
                f"({self.registry_ttl:g}s): records are deleted only for long-dead instances")
        try:
            if self.service_url is not None:
                base_url(self.service_url, where="SERVICE_URL")
            if self.registry_backend == "static":
                parse_static(self.registry_static)
            if self.registry_backend == "dns":
                check_template(self.registry_dns_template)
            AllowedNetworks(self.registry_allowed_networks.split(","))
        except RegistryError as exc:
            raise ValueError(str(exc)) from None
        return self

    def advertised_url(self) -> str:
        """Where other services reach this instance (scheme, host and port)."""
        if self.service_url is not None:
            return base_url(self.service_url, where="SERVICE_URL")[0]
        return f"http://{self.service_host}:{self.service_port}"

    def kafka(self) -> KafkaConfig:
        return KafkaConfig(
            bootstrap_servers=self.kafka_bootstrap_servers,
            client_id=f"{self.service_name}-{self.instance_id}",
            consumer_group=self.kafka_consumer_group or self.service_name,
            auto_offset_reset=self.kafka_auto_offset_reset,
            service_name=self.service_name,
            topic_partitions=self.kafka_topic_partitions,
            topic_replication_factor=self.kafka_topic_replication_factor,
            extra=self._kafka_security(),
        )

    def _kafka_security(self) -> dict[str, str | int | float | bool]:
        """The client settings for `KAFKA_SECURITY_PROTOCOL` (none for PLAINTEXT)."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        extra: dict[str, str | int | float | bool] = {
            "security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            password = self.kafka_sasl_password  # both set: checked at load
            extra.update({"sasl.mechanism": self.kafka_sasl_mechanism,
                          "sasl.username": self.kafka_sasl_username or "",
                          "sasl.password": password.get_secret_value() if password else ""})
        if self.kafka_ssl_ca_location:
            extra["ssl.ca.location"] = self.kafka_ssl_ca_location
        return extra


def _short_id() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
