"""Service registry: announce this instance, discover the others (see `base`)."""

from core.service_registry.base import Change, Instance, RegistryError, ServiceRegistry

__all__ = ["Change", "Instance", "RegistryError", "ServiceRegistry"]
