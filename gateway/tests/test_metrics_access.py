"""The gateway's own `/metrics` is for the monitoring networks: a client on the internet gets
403 with the reason, also when it comes through a trusted load balancer; an address inside
the networks (direct, or behind the balancer) is served."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.fixed_registry import FixedRegistry

BALANCER = "198.51.100.10"


def settings(**overrides: object) -> GatewaySettings:
    return GatewaySettings(_env_file=None, jwks_url="http://127.0.0.1:9/.well-known/jwks.json",
                           gateway_trusted_proxies=[BALANCER], **overrides)  # type: ignore[arg-type]


async def get_metrics(cfg: GatewaySettings, peer: str,
                      forwarded_for: str | None = None) -> httpx.Response:
    app = create_app(cfg, registry=FixedRegistry({}))
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.get("/metrics", headers=headers)


@pytest.mark.parametrize(("peer", "forwarded_for"), [
    ("203.0.113.7", None),             # a client on the internet
    (BALANCER, "203.0.113.7"),         # the same, through the trusted balancer
    ("203.0.113.7", "10.0.0.5"),       # an untrusted peer claiming a private address
])
async def test_a_client_outside_the_monitoring_networks_is_refused_with_the_reason(
        peer: str, forwarded_for: str | None) -> None:
    response = await get_metrics(settings(), peer, forwarded_for)
    assert response.status_code == 403
    assert "monitoring networks" in response.text and "metrics_forbidden" in response.text
    assert "kfm_" not in response.text


@pytest.mark.parametrize(("peer", "forwarded_for"), [
    ("127.0.0.1", None), ("10.1.2.3", None), (BALANCER, "192.168.4.4"), ("fd00::7", None)])
async def test_a_client_inside_the_monitoring_networks_is_served(
        peer: str, forwarded_for: str | None) -> None:
    response = await get_metrics(settings(), peer, forwarded_for)
    assert response.status_code == 200, response.text
    assert "kfm_http_requests_total" in response.text


async def test_the_networks_are_configurable() -> None:
    cfg = settings(gateway_metrics_networks=["203.0.113.0/24"])
    assert (await get_metrics(cfg, "203.0.113.7")).status_code == 200
    assert (await get_metrics(cfg, "127.0.0.1")).status_code == 403
