"""Assembles the catalog service: one `create_service` call; nothing is built at import.
The generated one's, with the products router and no subscription (the catalog consumes
nothing yet)."""

# Imports sorted as in services/catalog/, where this file runs (there it is first-party).
# ruff: noqa: I001

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from core.app import create_service
from core.security import Security
from services.catalog.config import CatalogSettings
from services.catalog.events import CATALOG_EVENTS, events
from services.catalog.models import Base
from services.catalog.routers import products

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(settings: CatalogSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    """The catalog service's app; nothing runs until its lifespan starts."""
    return create_service(
        "catalog", metadata=Base.metadata, service_dir=SERVICE_DIR, events=events,
        routers=[products], publishes=[CATALOG_EVENTS],
        settings=settings or CatalogSettings(), security=security)
