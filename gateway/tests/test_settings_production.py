"""The gateway starts in production with the settings a Kubernetes deployment gives it
(deploy/helm/gateway): no DATABASE_URL, since it keeps no database."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings

PRODUCTION = {"ENVIRONMENT": "production", "KAFKA_TOPIC_REPLICATION_FACTOR": "3",
              "REGISTRY_BACKEND": "dns"}


def test_production_needs_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    assert GatewaySettings(_env_file=None).database_url == ""


def test_production_checks_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**PRODUCTION, "KAFKA_TOPIC_REPLICATION_FACTOR": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="REPLICATION_FACTOR"):
        GatewaySettings(_env_file=None)
