"""Route table files written by a test and loaded as the gateway loads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewaySettings
from gateway.routes import RouteTable, RouteTableError, load_route_table

USERS: dict[str, Any] = {"name": "users", "prefix": "/api/users", "service": "user"}


def settings(**values: Any) -> GatewaySettings:
    values = {"legacy_upstream_url": None, "gateway_default_rate_limit": "600/60", **values}
    return GatewaySettings(_env_file=None, **values)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # strings, numbers and lists of them are TOML too


def route_toml(**fields: Any) -> str:
    """One [[routes]] entry: the users route with `fields` changed (None drops a field)."""
    merged = {**USERS, **fields}
    lines = [f"{key} = {toml_value(value)}" for key, value in merged.items() if value is not None]
    return "[[routes]]\n" + "\n".join(lines) + "\n"


def load(tmp_path: Path, text: str, **values: Any) -> RouteTable:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    return load_route_table(path, settings(**values))


def refusal(tmp_path: Path, text: str, **values: Any) -> str:
    with pytest.raises(RouteTableError) as caught:
        load(tmp_path, text, **values)
    message = str(caught.value)
    assert str(tmp_path / "routes.toml") in message
    return message
