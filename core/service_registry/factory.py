"""`registry_from_settings`: the backend that `REGISTRY_BACKEND` names, configured."""

from __future__ import annotations

from core.config import Settings
from core.service_registry.base import ServiceRegistry
from core.service_registry.dns import DnsRegistry
from core.service_registry.kafka import kafka_registry
from core.service_registry.static import StaticRegistry
from core.service_registry.trust import AllowedNetworks, RecordTrust, read_keys


def registry_from_settings(settings: Settings) -> ServiceRegistry:
    """A registry, not started yet (`start` opens it)."""
    if settings.registry_backend == "static":
        return StaticRegistry.from_spec(settings.registry_static)
    if settings.registry_backend == "dns":
        return DnsRegistry(settings.registry_dns_template,
                           namespace=settings.registry_dns_namespace,
                           port=settings.registry_dns_port, scheme=settings.registry_dns_scheme,
                           refresh=settings.registry_dns_refresh)
    return kafka_registry(settings.kafka(), ttl=settings.registry_ttl,
                          heartbeat_interval=settings.registry_heartbeat_interval,
                          grace=settings.registry_grace, topic=settings.registry_topic,
                          start_timeout=settings.registry_start_timeout,
                          trust=record_trust(settings))


def record_trust(settings: Settings) -> RecordTrust | None:
    """What the registry topic's records are judged by: the signing keys and allowed networks
    in settings; None when neither is set (every well-formed record is believed)."""
    key = settings.registry_signing_key
    keys = read_keys(key.get_secret_value() if key is not None else None,
                     settings.registry_signing_key_file)
    networks = AllowedNetworks(settings.registry_allowed_networks.split(","))
    if not keys and not networks:
        return None
    return RecordTrust(keys, ttl=settings.registry_ttl, skew=settings.registry_clock_skew,
                       networks=networks)
