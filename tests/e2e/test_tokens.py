"""Tokens across the system: auth issues them, every other service accepts them through auth's
JWKS, refresh tokens rotate, a reused one revokes its family, and every service refuses a bad
token with 401 (services/README.md, "Tokens")."""

from __future__ import annotations

import pytest

from tests.e2e.system import System, unwrap
from tests.e2e.tokens import forged, header_and_claims

# One route per service that needs a token (and only a token: any user may call it).
PROTECTED = {
    "auth": "/auth/me",
    "user": "/users/me",
    "driver": "/drivers/nearby?lat=0&lon=0&radius_km=1",
    "notification": "/notifications",
}


async def test_a_registered_user_logs_in_and_the_token_works_at_another_service(
        system: System) -> None:
    account = await system.register()
    assert "user" in account.roles
    await system.login(account)
    header, claims = header_and_claims(account.access_token)
    assert header["alg"] == "EdDSA" and header["kid"]
    assert claims["sub"] == account.id and claims["kind"] == "user"
    assert claims["iss"] == "auth" and claims["aud"] in ("platform", ["platform"])
    assert {"profile:read", "drivers:read"} <= set(claims["permissions"])
    assert 600 <= claims["exp"] - claims["iat"] <= 1200  # about 15 minutes

    profile = await system.profile(account)  # user service: verified with auth's JWKS
    assert profile.get("user_id", profile.get("id")) == account.id
    assert profile["email"] == account.email
    async with system.http("auth", account.access_token) as http:
        me = await http.get("/auth/me")
    assert me.status_code == 200
    assert unwrap(me.json())["email"] == account.email


async def test_login_refuses_a_wrong_password_and_register_a_taken_email(
        system: System) -> None:
    account = await system.register()
    async with system.http("auth") as http:
        wrong = await http.post("/auth/login", json={"email": account.email,
                                                     "password": "not-the-password"})
        unknown = await http.post("/auth/login", json={"email": "nobody@example.com",
                                                       "password": "not-the-password"})
        again = await http.post("/auth/register", json={"email": account.email,
                                                        "password": account.password})
        malformed = await http.post("/auth/register", json={"email": "not-an-email"})
    assert wrong.status_code == 401 and unknown.status_code == 401
    assert again.status_code == 409, again.text
    assert malformed.status_code == 422, malformed.text


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(
        system: System) -> None:
    account = await system.user()
    first = account.refresh_token
    async with system.http("auth") as http:
        rotated = await http.post("/auth/refresh", json={"refresh_token": first})
        assert rotated.status_code == 200, rotated.text
        pair = unwrap(rotated.json())
        second = pair["refresh_token"]
        assert second != first and pair["access_token"] != account.access_token
        async with system.http("user", pair["access_token"]) as user_http:
            assert (await user_http.get("/users/me")).status_code != 401

        # The first token again: a replay. Refused, and the whole family with it.
        replay = await http.post("/auth/refresh", json={"refresh_token": first})
        assert replay.status_code == 401, replay.text
        after = await http.post("/auth/refresh", json={"refresh_token": second})
        assert after.status_code == 401, "the family must be revoked after a reuse"

        # A fresh login starts a new family that works.
        await system.login(account)
        fresh = await http.post("/auth/refresh", json={"refresh_token": account.refresh_token})
        assert fresh.status_code == 200, fresh.text


async def test_logout_ends_the_refresh_token(system: System) -> None:
    account = await system.user()
    async with system.http("auth", account.access_token) as http:
        out = await http.post("/auth/logout", json={"refresh_token": account.refresh_token})
        assert out.status_code == 204, out.text
        refresh = await http.post("/auth/refresh", json={"refresh_token": account.refresh_token})
        assert refresh.status_code == 401, refresh.text


async def test_garbage_refresh_tokens_are_refused(system: System) -> None:
    async with system.http("auth") as http:
        for token in ("", "nonsense", "a" * 500):
            response = await http.post("/auth/refresh", json={"refresh_token": token})
            assert response.status_code in (401, 422), (token[:10], response.text)
        missing = await http.post("/auth/refresh", json={})
        assert missing.status_code == 422


@pytest.mark.parametrize("service", sorted(PROTECTED))
async def test_every_service_refuses_bad_tokens(system: System, service: str) -> None:
    account = await system.user()
    path = PROTECTED[service]
    bad = await forged(account.access_token, system.stack.keys_dir)
    async with system.http(service) as http:
        control = await http.get(path, headers={"Authorization":
                                                f"Bearer {account.access_token}"})
        assert control.status_code != 401, f"the good token is refused: {control.text}"
        missing = await http.get(path)
        assert missing.status_code == 401, missing.text
        for what, token in bad.items():
            response = await http.get(path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, f"{service} accepted a {what} token: " \
                                                f"{response.status_code} {response.text}"
            assert "Traceback" not in response.text
