"""Accounts and sessions over HTTP against the auth process: register, login, /auth/me,
refresh rotation and reuse detection, logout, password change, one answer for bad
credentials, throttling and lockout, rehash on login. Roles, service clients, keys and the
service's own token checks: test_http_rbac.py; its OpenAPI contract: test_contract.py."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import httpx

from services.auth.tests.conftest import PASSWORD, AuthProc, bearer, lines, login, register
from tests.helpers import unique


def email() -> str:
    return f"{unique('user')}@Example.com"


async def test_register_login_and_me(auth: AuthProc) -> None:
    async with auth.client() as http:
        address = email()
        user = await register(http, f"  {address}  ")
        assert user["email"] == address.lower() and user["roles"] == ["user"]
        tokens = await login(http, address.upper())  # case does not matter
        assert tokens["token_type"] == "Bearer" and 800 <= tokens["expires_in"] <= 900
        me = await http.get("/auth/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json() == {"id": user["id"], "kind": "user", "email": address.lower(),
                             "roles": ["user"], "permissions": [
                                 "drivers:read", "drivers:register", "notifications:read",
                                 "orders:place", "orders:read", "profile:read",
                                 "profile:write"]}
        assert (await http.get("/auth/me")).status_code == 401


async def test_register_refuses_taken_emails_and_weak_passwords_with_reasons(
    auth: AuthProc,
) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        again = await http.post("/auth/register", json={"email": address.upper(),
                                                        "password": PASSWORD})
        assert again.status_code == 409 and again.json()["error"]["fields"][0]["field"] == "email"
        cases = {"short-A1": "length", "alllowercaseletters": "too_simple",
                 "x" * 129: "length"}
        for password, code in cases.items():
            weak = await http.post("/auth/register", json={"email": email(), "password": password})
            assert weak.status_code == 422, weak.text
            assert code in {f["code"] for f in weak.json()["error"]["fields"]}, weak.text
        local = unique("same")
        same = await http.post("/auth/register", json={"email": f"{local}@example.com",
                                                       "password": f"{local}@example.com"})
        assert same.status_code == 422 and "same_as_email" in same.text
        for bad in ("not-an-email", "a@b", "two@@example.com"):
            refused = await http.post("/auth/register", json={"email": bad, "password": PASSWORD})
            assert refused.status_code == 422, (bad, refused.text)
        extra = await http.post("/auth/register", json={"email": email(), "password": PASSWORD,
                                                        "roles": ["admin"]})
        assert extra.status_code == 422, "no field beyond email and password is accepted"


async def test_a_wrong_password_and_an_unknown_email_get_the_same_bytes(auth: AuthProc) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        wrong = await http.post("/auth/login", json={"email": address, "password": "nope-Nope-1"})
        unknown = await http.post("/auth/login", json={"email": email(), "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.content == unknown.content
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    assert wrong.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")


async def test_refresh_rotates_and_the_new_token_carries_on(auth: AuthProc) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        first = await login(http, address)
        second = await http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200, second.text
        pair = second.json()
        assert pair["refresh_token"] != first["refresh_token"]
        assert (await http.get("/auth/me", headers=bearer(pair["access_token"]))).status_code \
            == 200
        third = await http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert third.status_code == 200, third.text
        for bad in ("made-up", "x" * 201):
            refused = await http.post("/auth/refresh", json={"refresh_token": bad})
            assert refused.status_code in (401, 422), refused.text


async def test_a_reused_refresh_token_revokes_its_whole_family(auth: AuthProc) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        stolen = (await login(http, address))["refresh_token"]
        other_session = (await login(http, address))["refresh_token"]
        newest = (await http.post("/auth/refresh", json={"refresh_token": stolen})).json()
        replay = await http.post("/auth/refresh", json={"refresh_token": stolen})
        assert replay.status_code == 401
        assert replay.json()["error"]["code"] == "invalid_refresh_token"
        after = await http.post("/auth/refresh", json={"refresh_token": newest["refresh_token"]})
        assert after.status_code == 401, "the newest token of the family is revoked too"
        untouched = await http.post("/auth/refresh", json={"refresh_token": other_session})
        assert untouched.status_code == 200, "another login's family is not affected"


async def test_concurrent_refreshes_of_one_token_exactly_one_wins(auth: AuthProc) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        token = (await login(http, address))["refresh_token"]
        answers = await asyncio.gather(*(
            http.post("/auth/refresh", json={"refresh_token": token}) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [200] + [401] * 7, [
        a.text for a in answers]


async def test_logout_revokes_the_session(auth: AuthProc) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        tokens = await login(http, address)
        body = {"refresh_token": tokens["refresh_token"]}
        assert (await http.post("/auth/logout", json=body)).status_code == 401, "needs a token"
        out = await http.post("/auth/logout", json=body, headers=bearer(tokens["access_token"]))
        assert out.status_code == 204, out.text
        assert (await http.post("/auth/refresh", json=body)).status_code == 401


async def test_a_password_change_revokes_every_session(auth: AuthProc) -> None:
    async with auth.client() as http:
        address = email()
        await register(http, address)
        sessions = [await login(http, address) for _ in range(2)]
        access = bearer(sessions[0]["access_token"])
        wrong = await http.post("/auth/password", headers=access, json={
            "current_password": "not-it-Nope-1", "new_password": "another-Pass-2"})
        assert wrong.status_code == 403, wrong.text
        weak = await http.post("/auth/password", headers=access, json={
            "current_password": PASSWORD, "new_password": "weak"})
        assert weak.status_code == 422 and weak.json()["error"]["fields"][0]["field"] == \
            "new_password"
        changed = await http.post("/auth/password", headers=access, json={
            "current_password": PASSWORD, "new_password": "another-Pass-2"})
        assert changed.status_code == 204, changed.text
        for session in sessions:
            refused = await http.post("/auth/refresh",
                                      json={"refresh_token": session["refresh_token"]})
            assert refused.status_code == 401
        old = await http.post("/auth/login", json={"email": address, "password": PASSWORD})
        assert old.status_code == 401
        await login(http, address, "another-Pass-2")


async def test_failed_logins_slow_down_then_lock_the_account(auth: AuthProc) -> None:
    """Per the module's settings: slowed from 3 failures (0.5 s, doubling), locked at 5 (3 s)."""
    async with auth.client() as http:
        address = email()
        await register(http, address)

        async def attempt(password: str) -> httpx.Response:
            return await http.post("/auth/login", json={"email": address, "password": password})

        for _ in range(3):
            assert (await attempt("wrong-Pass-1")).status_code == 401
        slowed = await attempt(PASSWORD)  # the right password, too soon
        assert slowed.status_code == 429, slowed.text
        assert slowed.json()["error"]["code"] == "login_throttled"
        assert int(slowed.headers["retry-after"]) >= 1
        await asyncio.sleep(0.6)
        assert (await attempt("wrong-Pass-1")).status_code == 401  # the 4th failure
        await asyncio.sleep(1.1)
        assert (await attempt("wrong-Pass-1")).status_code == 401  # the 5th: locked
        right, wrong = await attempt(PASSWORD), await attempt("wrong-Pass-1")
        assert right.status_code == wrong.status_code == 429
        assert right.json() == wrong.json(), "locked: the same answer, right password or not"
        assert int(right.headers["retry-after"]) in (2, 3)
        other = email()
        await register(http, other)
        await login(http, other)  # another account is not affected
        await asyncio.sleep(3.1)
        await login(http, address)  # the lock ended; success resets the count
        assert (await attempt("wrong-Pass-1")).status_code == 401
        assert (await attempt("wrong-Pass-1")).status_code == 401
        await login(http, address)


async def test_a_login_rehashes_a_password_hashed_with_old_parameters(auth: AuthProc) -> None:
    address = email().lower()
    made = auth.cli("create-admin", "--email", address, "--password-stdin", stdin=PASSWORD,
                    env={"ARGON2_TIME_COST": "2"})
    assert made.returncode == 0, made.stderr
    user_id = lines(made.stdout)["id"].replace("-", "")

    def stored() -> str:
        path = auth.env["DATABASE_URL"].split("///", 1)[1]
        with sqlite3.connect(path) as db:
            row: Any = db.execute("SELECT password_hash FROM users WHERE id = ?",
                                  (user_id,)).fetchone()
        return str(row[0])

    assert ",t=2," in stored()
    async with auth.client() as http:
        await login(http, address)
    assert ",t=1," in stored(), "rehashed with the service's parameters"
    async with auth.client() as http:
        await login(http, address)
