"""The gateway keeps the contract its merged OpenAPI states, checked by schemathesis over real
HTTP against a running gateway (its own paths, and a protected route to a stand-in upstream,
with a token and without): every status it answers is declared, and every body matches the
schema declared for it (the gateway's own errors, `/health/live`, `/health/ready`)."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from devinfra.process import free_port
from gateway.tests.harness import Gateway, Upstream, start_issuer, static_registry
from tests.contract import run_schemathesis

ROUTES = """
[defaults]
rate_limit = "none"

[[routes]]
name = "things"
prefix = "/api/things"
service = "svc"
rewrite = "/things"
"""
CHECKS = ("status_code_conformance", "content_type_conformance",
          "response_schema_conformance")


@pytest.mark.timeout(600)
async def test_the_gateway_keeps_its_merged_openapi_contract(
        spawn: Callable[..., Any], tmp_path: Path) -> None:
    issuer = await start_issuer(spawn, tmp_path)
    svc = await Upstream("svc", free_port(), spawn).start()
    gateway = await Gateway(spawn, tmp_path / "gw", ROUTES, {
        "REGISTRY_STATIC": static_registry({"svc": [svc]}),
        "JWKS_URL": issuer.jwks_url}).start()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        doc = (await http.get("/openapi.json")).json()
    assert {"/health/live", "/health/ready", "/api/things/{thing_id}"} <= set(doc["paths"])
    token = await issuer.issue("contract-user")
    for name, headers in (("anonymous", {}), ("with a token", {
            "Authorization": f"Bearer {token}"})):
        run = await asyncio.to_thread(run_schemathesis, gateway.url, tmp_path,
                                      headers=headers, checks=CHECKS, max_examples=40)
        print(f"{name}: {run.cases} cases in {run.seconds:.1f}s")
        assert run.cases > 0, f"schemathesis ran no case:\n{run.output}"
        assert run.passed, (
            f"the gateway breaks its OpenAPI contract ({name}, {run.cases} cases)\n"
            f"$ (cd {tmp_path} && {shlex.join(run.command)})\n{run.output}")
    seen = {r["path"] for r in await svc.seen()}
    assert any(path.startswith("/things/") for path in seen)  # the upstream was reached
