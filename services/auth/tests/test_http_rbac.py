"""Roles, service clients and the auth service's own token checks, over HTTP against the auth
process; the commands (create-admin, create-client, rotate-keys) run beside it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from pydantic import SecretStr

from core.security import ACCESS_TOKEN_TYPE, ClientCredentials, FileKeyStore, KeyManager, SigningKey
from services.auth.tests.conftest import PASSWORD, AuthProc, bearer, lines, login, register
from tests.helpers import eventually, unique
from tests.security_support import raw, tamper_payload


def email() -> str:
    return f"{unique('user')}@example.com"


async def test_create_admin_prints_credentials_that_log_in_and_is_idempotent(
    auth: AuthProc,
) -> None:
    address = email()
    first = auth.cli("create-admin", "--email", address)
    assert first.returncode == 0, first.stderr
    printed = lines(first.stdout)
    assert printed["email"] == address and len(printed["password"]) >= 20
    async with auth.client() as http:
        tokens = await login(http, address, printed["password"])
        me = (await http.get("/auth/me", headers=bearer(tokens["access_token"]))).json()
    assert me["roles"] == ["admin", "user"] and "rbac:manage" in me["permissions"]
    again = auth.cli("create-admin", "--email", address)
    assert again.returncode == 0 and lines(again.stdout)["email"] == address
    weak = auth.cli("create-admin", "--email", email(), "--password-stdin", stdin="short\n")
    assert weak.returncode == 1 and "password" in weak.stderr


async def test_create_admin_gives_an_existing_user_the_admin_role(auth: AuthProc) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        done = auth.cli("create-admin", "--email", address)
        assert done.returncode == 0, done.stderr
        tokens = await login(http, address)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["admin", "user"]


async def test_an_assigned_role_shows_in_the_next_token(auth: AuthProc,
                                                        admin: dict[str, Any]) -> None:
    as_admin = bearer(admin["access_token"])
    async with auth.client() as http:
        address = email()
        user = await register(http, address)
        tokens = await login(http, address)
        assert (await http.get("/auth/roles", headers=bearer(tokens["access_token"]))
                ).status_code == 403, "a user may not manage roles"
        denied = await http.put(f"/auth/users/{user['id']}/roles/admin",
                                headers=bearer(tokens["access_token"]))
        assert denied.status_code == 403, "nor give itself the admin role"
        created = await http.post("/auth/roles", headers=as_admin, json={
            "name": unique("dispatch"), "permissions": ["drivers:write", "orders:read"]})
        assert created.status_code == 201, created.text
        role = created.json()["name"]
        assigned = await http.put(f"/auth/users/{user['id']}/roles/{role}", headers=as_admin)
        assert assigned.status_code == 200 and assigned.json()["roles"] == sorted(["user", role])
        again = await http.put(f"/auth/users/{user['id']}/roles/{role}", headers=as_admin)
        assert again.json() == assigned.json(), "assigning twice changes nothing"
        refreshed = (await http.post("/auth/refresh",
                                     json={"refresh_token": tokens["refresh_token"]})).json()
        claims = jwt.decode(refreshed["access_token"], options={"verify_signature": False})
        assert {"drivers:write", "orders:read"} <= set(claims["permissions"])
        assert role in claims["roles"]
        edited = await http.put(f"/auth/roles/{role}/permissions", headers=as_admin,
                                json={"permissions": ["orders:read"]})
        assert edited.status_code == 200 and edited.json()["permissions"] == ["orders:read"]
        revoked = await http.delete(f"/auth/users/{user['id']}/roles/{role}", headers=as_admin)
        assert revoked.json()["roles"] == ["user"]
        next_token = await login(http, address)
        claims = jwt.decode(next_token["access_token"], options={"verify_signature": False})
        assert "drivers:write" not in claims["permissions"] and role not in claims["roles"]


async def test_rbac_refusals(auth: AuthProc, admin: dict[str, Any]) -> None:
    as_admin = bearer(admin["access_token"])
    async with auth.client() as http:
        user = await register(http)
        missing = f"/auth/users/{user['id']}/roles/no-such-role"
        assert (await http.put(missing, headers=as_admin)).status_code == 404
        nobody = "/auth/users/00000000-0000-4000-8000-000000000000/roles/user"
        assert (await http.put(nobody, headers=as_admin)).status_code == 404
        bad = await http.post("/auth/roles", headers=as_admin,
                              json={"name": "x", "permissions": ["not a permission"]})
        assert bad.status_code == 422
        taken = await http.post("/auth/roles", headers=as_admin, json={"name": "user"})
        assert taken.status_code == 409
        keep = await http.put("/auth/roles/admin/permissions", headers=as_admin,
                              json={"permissions": ["users:read"]})
        assert keep.status_code == 409, "the admin role keeps rbac:manage"
        listed = (await http.get("/auth/roles", headers=as_admin)).json()
        by_name = {r["name"]: r for r in listed}
        assert "rbac:manage" in by_name["admin"]["permissions"]
        assert "rbac:manage" not in by_name["user"]["permissions"]
        assert (await http.get("/auth/roles")).status_code == 401


async def test_client_credentials_for_service_identities(auth: AuthProc,
                                                         admin: dict[str, Any]) -> None:
    name = unique("driver")
    made = auth.cli("create-client", name, "--permission", "users:read")
    assert made.returncode == 0, made.stderr
    printed = lines(made.stdout)
    assert printed["client_id"] == name
    # The platform's own client side (core.security.service_identity) against the endpoint.
    for style in ("basic", "form"):
        credentials = ClientCredentials(f"{auth.url}/oauth/token", name,
                                        SecretStr(printed["client_secret"]), auth=style)
        token = await credentials.token()
        await credentials.aclose()
        async with auth.client() as http:
            me = (await http.get("/auth/me", headers=bearer(token))).json()
        assert me == {"id": name, "kind": "service", "email": None, "roles": [],
                      "permissions": ["users:read"]}
    async with auth.client() as http:
        form = {"grant_type": "client_credentials", "client_id": name,
                "client_secret": "wrong"}
        wrong = await http.post("/oauth/token", data=form)
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        unknown = await http.post("/oauth/token", data={**form, "client_id": "nobody"})
        assert unknown.content == wrong.content
        grant = await http.post("/oauth/token", data={**form, "grant_type": "password"})
        assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
        scoped = await http.post("/oauth/token", data={
            **form, "client_secret": printed["client_secret"], "scope": "users:write"})
        assert scoped.status_code == 400 and scoped.json()["error"] == "invalid_scope"
        none = await http.post("/oauth/token", data={"grant_type": "client_credentials"})
        assert none.status_code == 401 and none.json()["error"] == "invalid_client"
        via_api = await http.post("/auth/clients", headers=bearer(admin["access_token"]),
                                  json={"name": unique("notify"),
                                        "permissions": ["users:read"]})
        assert via_api.status_code == 201 and via_api.json()["client_secret"]
        # A client named as a user would get tokens whose subject is that user's id: no
        # client id is a UUID (one starting with a digit fails the name pattern already).
        for spelling in (LIKE_A_USER_ID, LIKE_A_USER_ID.replace("-", "")):
            as_user = await http.post("/auth/clients", headers=bearer(admin["access_token"]),
                                      json={"name": spelling})
            assert as_user.status_code == 422, as_user.text
            assert as_user.json()["error"]["fields"][0]["code"] == "reserved"
    assert auth.cli("create-client", name).returncode == 1, "a client id is taken once"
    refused = auth.cli("create-client", LIKE_A_USER_ID)
    assert refused.returncode == 1 and "may not be a UUID" in refused.stderr


LIKE_A_USER_ID = "abcdef01-2345-4678-9abc-def012345678"


async def _service_keys(auth: AuthProc) -> KeyManager:
    return await KeyManager.open(FileKeyStore(auth.env["JWT_KEYS_DIR"]))


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "auth", "aud": "platform", "sub": "00000000-0000-4000-8000-000000000001",
              "iat": now, "nbf": now, "exp": now + 300, "kind": "user", "roles": ["admin"],
              "permissions": ["rbac:manage"]}
    return {**claims, **overrides}


async def test_the_service_refuses_forged_and_broken_tokens(auth: AuthProc) -> None:
    keys = await _service_keys(auth)
    signer = keys.signer

    def signed(key: SigningKey, **overrides: Any) -> str:
        return jwt.encode(_claims(**overrides), key.private_key, algorithm=key.alg,
                          headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})

    stranger = SigningKey.generate("EdDSA", now=time.time())
    forged = {
        "expired": signed(signer, exp=int(time.time()) - 120),
        "tampered": tamper_payload(signed(signer)),
        "alg none": raw({"alg": "none", "kid": signer.kid}, _claims()),
        "another key, our kid": jwt.encode(_claims(), stranger.private_key, algorithm="EdDSA",
                                           headers={"kid": signer.kid}),
        "another key": signed(stranger),
        "wrong audience": signed(signer, aud="billing"),
        "wrong issuer": signed(signer, iss="evil"),
    }
    async with auth.client() as http:
        assert (await http.get("/auth/roles", headers=bearer(signed(signer)))).status_code \
            == 200, "the same claims, properly signed, pass"
        for name, token in forged.items():
            answer = await http.get("/auth/roles", headers=bearer(token))
            assert answer.status_code == 401, (name, answer.text)
            assert answer.json()["error"]["code"] == "invalid_token"


async def test_rotate_keys_publishes_a_new_kid_and_old_tokens_still_verify(
    auth: AuthProc,
) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        before = await login(http, address)
        old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
        done = auth.cli("rotate-keys", "--alg", "ES256")
        assert done.returncode == 0, done.stderr
        new_kid = lines(done.stdout)["kid"]

        async def published() -> bool:
            kids = {k["kid"] for k in (await http.get("/.well-known/jwks.json")).json()["keys"]}
            return {old_kid, new_kid} <= kids

        deadline = time.monotonic() + 10  # the service reloads its key folder every 0.5 s
        while not await published():
            assert time.monotonic() < deadline, "the new kid never showed in the JWKS"
            await asyncio.sleep(0.2)
        after = await login(http, address)
        header = jwt.get_unverified_header(after["access_token"])
        assert header == {"alg": "ES256", "kid": new_kid, "typ": "at+jwt"}
        for tokens in (before, after):
            me = await http.get("/auth/me", headers=bearer(tokens["access_token"]))
            assert me.status_code == 200, me.text
    retiring = json.loads((Path(auth.env["JWT_KEYS_DIR"]) / f"{old_kid}.json").read_text())
    lifetime = retiring["retire_at"] - time.time()
    assert 900 < lifetime <= 900 + 0.5 + 30, "retires once its longest token has expired"
    assert auth.cli("rotate-keys", "--alg", "HS256").returncode == 2


async def test_events_reach_kafka_through_the_outbox(auth: AuthProc, kafka: Any,
                                                     admin: dict[str, Any]) -> None:
    from core.config import KafkaConfig
    from core.messaging import KafkaEventBus
    from services.auth.events import TOPIC, registry

    seen: list[Any] = []

    async def record(event: Any) -> None:
        seen.append(event)

    bus = KafkaEventBus(KafkaConfig(kafka.bootstrap_servers, unique("c"), unique("g")),
                        registry())
    bus.subscribe(TOPIC, record)
    await bus.start()
    try:
        async with auth.client() as http:
            address = email()
            user = await register(http, address)
            tokens = await login(http, address)
            await http.put(f"/auth/users/{user['id']}/roles/admin",
                           headers=bearer(admin["access_token"]))
            await http.post("/auth/password", headers=bearer(tokens["access_token"]), json={
                "current_password": PASSWORD, "new_password": "another-Pass-2"})

        def mine() -> list[tuple[str, dict[str, Any]]]:
            return [(e.event_type, e.data.model_dump()) for e in seen
                    if e.aggregate_id == user["id"]]

        await eventually(lambda: len(mine()) >= 3, timeout=30)
    finally:
        await bus.stop()
    assert mine() == [
        ("auth.user_registered", {"user_id": user["id"], "email": address, "roles": ["user"]}),
        ("auth.roles_changed", {"user_id": user["id"], "roles": ["admin", "user"]}),
        ("auth.password_changed", {"user_id": user["id"]}),
    ]
    assert all(e.service_name == "auth" for e in seen)


async def test_health_and_jwks_are_public(auth: AuthProc) -> None:
    async with httpx.AsyncClient(base_url=auth.url) as http:
        jwks = await http.get("/.well-known/jwks.json")
        assert jwks.status_code == 200
        assert all("d" not in key for key in jwks.json()["keys"]), "public parts only"
        assert (await http.get("/health/ready")).status_code == 200
