"""What `create_service` wires from settings alone, seen from outside over real HTTP: tokens
verified through the issuer's JWKS (401 without one, the rule named), a request id kept and
echoed, and a call to another service, found through the registry, carrying the caller's token
and ids. Three real processes: the issuer, an upstream ("echo") and the sample service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from core.config import KafkaConfig
from devinfra.process import free_port
from tests.helpers import IssuerProc, answers_ok, eventually
from tests.helpers.service import Spawn, serve
from tests.security_support import AUDIENCE, ISSUER


async def test_a_service_verifies_tokens_and_calls_another_by_name_with_the_callers_identity(
    spawn: Spawn, kafka_config: KafkaConfig, issuer: IssuerProc, tmp_path: Path
) -> None:
    echo_port = free_port()
    echo = spawn("tests.integration.procs.upstream", str(echo_port), "echo-1")
    await eventually(lambda: answers_ok(f"http://127.0.0.1:{echo_port}/echo"), timeout=60,
                     interval=0.2)
    served = await serve(
        spawn, "tests.integration.procs.secured_app",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}", kafka=kafka_config,
        env={"JWKS_URL": issuer.jwks_url, "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
             "REGISTRY_BACKEND": "static",
             "REGISTRY_STATIC": f"echo=http://127.0.0.1:{echo_port}"})

    async with httpx.AsyncClient(base_url=issuer.url) as http:
        token = (await http.post("/issue", json={"sub": "user-7",
                                                 "permissions": ["widgets:read"]})).json()["token"]
    async with httpx.AsyncClient(base_url=served.base_url) as http:
        anonymous = await http.get("/whoami")
        forged = await http.get("/whoami", headers={"Authorization": f"Bearer {token}x"})
        me = await http.get("/whoami", headers={"Authorization": f"Bearer {token}",
                                                "X-Request-ID": "req-42"})
        relayed = await http.get("/relay/echo", headers={"Authorization": f"Bearer {token}",
                                                        "X-Request-ID": "req-43"})
        echo.kill()
        echo.wait()
        gone = await http.get("/relay/echo", headers={"Authorization": f"Bearer {token}"})

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"  # no credentials: RFC 6750 3.1
    assert forged.status_code == 401 and forged.json()["error"]["fields"][0]["code"] in (
        "bad_signature", "malformed")
    assert me.status_code == 200, me.text
    assert me.json() == {"subject": "user-7", "permissions": ["widgets:read"]}
    assert me.headers["x-request-id"] == "req-42"
    assert relayed.status_code == 200, relayed.text
    seen: dict[str, Any] = relayed.json()
    assert seen["instance"] == "echo-1"
    assert seen["headers"]["authorization"] == f"Bearer {token}"
    assert seen["headers"]["x-request-id"] == "req-43"
    assert seen["headers"]["x-correlation-id"] == "req-43"
    assert relayed.headers["x-request-id"] == "req-43"
    assert gone.status_code == 503, gone.text
    assert gone.json()["error"] == {"code": "upstream_unavailable", "fields": [],
                                    "message": "Service 'echo' is unavailable"}
