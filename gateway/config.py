"""The gateway's settings: core's (Kafka, registry, JWT, Redis) plus its own, from the
environment (upper-cased names)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from core.config import Settings
from gateway.routes.checks import parse_rate_limit

DEFAULT_ROUTES_FILE = Path(__file__).with_name("routes.toml")


class GatewaySettings(Settings):
    service_name: str = "gateway"
    service_port: int = Field(default=8000, ge=1, le=65535)
    database_url: str = ""
    """The gateway keeps no database: none to name, also in production (where core refuses a
    SQLite one)."""

    gateway_routes_file: Path = DEFAULT_ROUTES_FILE
    """The route table (TOML); reloaded when it changes."""
    gateway_routes_poll_seconds: float = Field(default=1.0, gt=0)
    """How often the route table file is checked for a change."""
    legacy_upstream_url: str | None = None
    """The monolith being retired: requests no route matches go there (strangler fig).
    Unset: they get 404."""
    gateway_max_body_bytes: int = Field(default=1024 * 1024, ge=0)
    """Request bodies above this get 413 (checked on Content-Length, and while streaming)."""
    gateway_max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    """All request header names and values together; above: 431."""
    gateway_max_head_bytes: int = Field(default=64 * 1024, ge=4096)
    """The request line and headers as received, bounded by the server before they are
    parsed (431 and close beyond; within it, GATEWAY_MAX_HEADER_BYTES answers in detail)."""
    gateway_head_timeout: float = Field(default=10.0, gt=0)
    """Seconds a client has to send a whole request head (slow heads are closed: 408)."""
    gateway_max_headers: int = Field(default=100, ge=10)
    """Request header fields; above: 431."""
    gateway_buffer_bytes: int = Field(default=64 * 1024, ge=0)
    """Request bodies up to this size (by Content-Length) are read whole before sending, so
    an idempotent request can be retried on another instance; larger or chunked ones stream
    through and are never retried."""
    gateway_idle_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds a streamed answer may pass no byte (the upstream stalls, or the client stops
    reading) before the gateway ends it; routes may set their own `idle_timeout`. Above the
    pings of any event stream behind the gateway (the driver service's: 15 s)."""
    gateway_max_streams: int = Field(default=1000, ge=1)
    gateway_max_client_streams: int = Field(default=8, ge=1)
    """Streamed answers open at once per route, and per client per route (routes may set
    their own `max_streams`, `max_client_streams`); beyond: 503, and 429 for the client."""
    gateway_trusted_proxies: list[str] = []
    """CIDRs of proxies in front of the gateway whose X-Forwarded-For is believed (a load
    balancer). Empty: the peer address is the client."""
    gateway_metrics_networks: list[str] = ["127.0.0.0/8", "::1/128", "10.0.0.0/8",
                                           "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
    """CIDRs of the clients the gateway's own `/metrics` answers (Prometheus, inside the
    network); anyone else gets 403. The client is the one `client_ip` sees, so a load balancer
    in front must be listed in `gateway_trusted_proxies` or everyone looks private."""
    gateway_workers: int = Field(default=1, ge=1, le=64)
    """Processes serving the gateway (`python -m gateway`)."""
    gateway_health_interval: float = Field(default=5.0, gt=0)
    """Seconds between active checks of each upstream instance's /health/ready."""
    gateway_upstream_client: Literal["h1", "aiohttp"] = "h1"
    """How the gateway talks to upstreams: its own lean HTTP/1.1 client (`core.http.
    h1_transport`, plain http only) or aiohttp's (https upstreams; the benchmark's baseline)."""
    gateway_default_rate_limit: str = "600/60"
    """`limit/window_seconds` per client per route, for routes that set none; "" for none."""
    gateway_refused_token_rate_limit: str = "20/60"
    """`limit/window_seconds`: tokens that fail verification per client address (IPv6: per
    /64) before its unknown tokens are answered 429 unverified; "none" for no limit."""

    gateway_console: bool = True
    """Serve the operations console at `/console` (docs/console.md). Off: the path goes
    through the route table like any other (to a legacy monolith's own `/console`, say)."""
    gateway_console_permission: str = "rbac:manage"
    """The permission a token needs for the operations console (`/console`): the admins'."""
    gateway_console_login_path: str = "/api/auth/login"
    """The gateway path the console's login form logs in through (the route to auth's
    login, so its throttling applies as to any client)."""

    @field_validator("gateway_refused_token_rate_limit")
    @classmethod
    def _refused_token_rate_limit(cls, value: str) -> str:
        parse_rate_limit(value, "refused-tokens")  # a ValueError says what is wrong
        return value

    @field_validator("legacy_upstream_url")
    @classmethod
    def _legacy_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("LEGACY_UPSTREAM_URL must be an http(s) URL")
        return value.rstrip("/")
