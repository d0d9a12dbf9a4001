"""The user service as a real process on real Kafka, over SQLite (in-process cache) and over
PostgreSQL (Redis cache): profiles from auth's events exactly once, updates and their events,
the cache, permissions, the admin search and request-reply (its OpenAPI contract:
test_contract.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from pydantic import BaseModel
from redis import asyncio as aioredis

from core.messaging import DomainEvent
from services.user.cache import NAMESPACE
from services.user.events import (
    USER_EVENTS,
    USER_REQUESTS,
    Contact,
    GetContact,
    GetContactData,
    ProfileCreated,
    ProfileUpdated,
    ProfileUpdatedData,
    UserRegistered,
)
from services.user.tests.conftest import DLQ, Service, Wire, registered, settle
from tests.helpers import eventually, unique

pytestmark = pytest.mark.timeout(180)


def new_user() -> tuple[str, str]:
    user_id = str(uuid.uuid4())
    return user_id, f"{unique('u')}@example.com"


# --- profiles from auth's events ------------------------------------------------------------


async def test_a_registration_makes_a_profile_and_publishes_profile_created(
        service: Service, wire: Wire) -> None:
    user_id, email = new_user()
    await wire.register(user_id, email)
    headers = await service.bearer(user_id, "profile:read")

    async def mine() -> dict[str, Any] | None:
        response = await service.call("GET", "/users/me", headers)
        return response.json()["data"] if response.status_code == 200 else None

    profile = await eventually(mine, interval=0.1)
    assert profile["id"] == user_id and profile["email"] == email
    assert profile["display_name"] == email.split("@")[0]
    assert profile["preferences"]["notification_channels"] == ["email"]
    [created] = await eventually(lambda: wire.on(USER_EVENTS, ProfileCreated, user_id))
    assert isinstance(created, ProfileCreated)
    assert created.aggregate_id == user_id and created.data.email == email
    assert created.service_name == "user"


class AuthRegisteredData(BaseModel):
    user_id: str
    email: str
    roles: list[str]


class AuthRegistered(DomainEvent[AuthRegisteredData]):
    """auth's event as a DomainEvent (aggregate_id, no key): the copy reads it as well."""

    EVENT_TYPE = "auth.user_registered"


async def test_the_same_registration_twice_makes_one_profile_and_one_event(
        service: Service, wire: Wire) -> None:
    user_id, email = new_user()
    event = await wire.register(user_id, email)
    await wire.register(user_id, email, event=event)  # redelivered: the same event id
    # Another registration for the same user (a new event id: re-sent, or after a restore),
    # and last one for someone else on the same key, so on the same partition, after these.
    await wire.bus.publish("auth.events", AuthRegistered(
        aggregate_id=user_id, data=AuthRegisteredData(user_id=user_id, email="again@x.org",
                                                      roles=[])))
    marker, marker_email = new_user()
    await wire.register(marker, marker_email, key=user_id)
    await eventually(lambda: service.profile_of(marker), interval=0.1)
    await eventually(lambda: wire.on(USER_EVENTS, ProfileCreated, marker))
    await settle()
    assert len(wire.on(USER_EVENTS, ProfileCreated, user_id)) == 1
    assert not wire.on(DLQ, UserRegistered, user_id)  # nothing dead-lettered
    profile = await service.profile_of(user_id)
    assert profile is not None and profile["email"] == email  # the first one stays
    listed = await service.call("GET", "/users", await service.admin(), params={"email": email})
    assert listed.json()["meta"]["total"] == 1
    ready = await service.call("GET", "/health/ready")
    assert ready.status_code == 200, ready.text


# --- updates, events and the cache ----------------------------------------------------------


async def test_an_update_publishes_profile_updated_and_the_next_read_is_fresh(
        service: Service, wire: Wire) -> None:
    user_id, email = new_user()
    await registered(service, wire, user_id, email)
    headers = await service.bearer(user_id, "profile:read", "profile:write")
    assert (await service.call("GET", "/users/me", headers)).status_code == 200  # cached now
    patched = await service.call("PATCH", "/users/me", headers, json={
        "display_name": "Ada L.", "phone": "+44 20 7946 0958",
        "preferences": {"language": "pt-BR", "marketing_opt_in": True}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["phone"] == "+442079460958"
    # The writer's next read, at once: not the cached copy from before the update.
    for path in ("/users/me", f"/users/{user_id}"):
        fresh = (await service.call("GET", path, headers)).json()["data"]
        assert fresh["display_name"] == "Ada L.", path
        assert fresh["preferences"] == {"language": "pt-BR", "marketing_opt_in": True,
                                        "notification_channels": ["email"]}
    [updated] = await eventually(lambda: wire.on(USER_EVENTS, ProfileUpdated, user_id))
    assert isinstance(updated, ProfileUpdated)
    assert updated.data.changed == ["display_name", "phone", "preferences"]
    assert updated.data.display_name == "Ada L." and updated.data.email == email


async def test_an_admin_update_with_users_write_publishes_too(
        service: Service, wire: Wire) -> None:
    user_id, email = new_user()
    await registered(service, wire, user_id, email)
    admin = await service.bearer(unique("admin"), "users:write")
    response = await service.call("PATCH", f"/users/{user_id}", admin,
                                  json={"avatar_url": "https://cdn.example.com/ada.png"})
    assert response.status_code == 200, response.text
    [updated] = await eventually(lambda: wire.on(USER_EVENTS, ProfileUpdated, user_id))
    assert isinstance(updated, ProfileUpdated) and updated.data.changed == ["avatar_url"]
    again = await service.call("PATCH", f"/users/{user_id}", admin,
                               json={"avatar_url": "https://cdn.example.com/ada.png"})
    assert again.status_code == 200
    await settle()
    assert len(wire.on(USER_EVENTS, ProfileUpdated, user_id)) == 1  # nothing changed


async def test_concurrent_updates_of_one_profile_all_land(service: Service, wire: Wire) -> None:
    """Each update merges into what the one before it wrote (preferences are merged): none
    is lost to another that read the profile before it committed."""
    user_id, email = new_user()
    await registered(service, wire, user_id, email)
    headers = await service.bearer(user_id, "profile:read", "profile:write")
    bodies: list[dict[str, Any]] = [
        {"preferences": {"language": "fr"}}, {"preferences": {"marketing_opt_in": True}},
        {"preferences": {"notification_channels": ["sms", "push"]}},
        {"display_name": "many"}, {"phone": "+15551234567"},
        {"avatar_url": "https://cdn.example.com/x.png"}]
    responses = await asyncio.gather(*(service.call("PATCH", "/users/me", headers, json=body)
                                       for body in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), responses[0].text
    final = (await service.call("GET", "/users/me", headers)).json()["data"]
    assert final["preferences"] == {"language": "fr", "marketing_opt_in": True,
                                    "notification_channels": ["sms", "push"]}
    assert (final["display_name"], final["phone"], final["avatar_url"]) == (
        "many", "+15551234567", "https://cdn.example.com/x.png")


@pytest.mark.parametrize("service", ["postgres"], indirect=True)  # the shared cache: Redis
async def test_a_stale_cached_profile_does_not_outlive_the_update_event(
        service: Service, wire: Wire) -> None:
    """A reader that loaded the row before a write committed may store it after the writer
    invalidated: planted here in Redis. The `user.profile_updated` that follows every write
    removes it, so the stale copy lives until that event at most, not until its TTL."""
    user_id, email = new_user()
    profile = await registered(service, wire, user_id, email)
    headers = await service.bearer(user_id, "profile:read")
    assert service.redis_url is not None, "this case runs on the Redis-backed service"
    redis = aioredis.Redis.from_url(service.redis_url)
    try:
        stale = {**profile, "display_name": "stale"}
        await redis.set(f"{NAMESPACE}:{user_id}", _json(stale), px=600_000)
        read = await service.call("GET", "/users/me", headers)
        assert read.json()["data"]["display_name"] == "stale"  # reads go through the cache
        await wire.bus.publish(USER_EVENTS, ProfileUpdated(
            aggregate_id=user_id, data=ProfileUpdatedData(
                user_id=user_id, email=email, display_name=profile["display_name"], phone=None,
                avatar_url=None, changed=["display_name"])))

        async def fresh() -> bool | None:
            response = await service.call("GET", "/users/me", headers)
            return response.json()["data"]["display_name"] != "stale" or None

        await eventually(fresh, timeout=15, interval=0.1)
    finally:
        await redis.aclose()


async def test_concurrent_readers_cannot_keep_an_old_profile_past_an_update(
        service: Service, wire: Wire) -> None:
    user_id, email = new_user()
    await registered(service, wire, user_id, email)
    headers = await service.bearer(user_id, "profile:read", "profile:write")
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            await service.call("GET", f"/users/{user_id}", headers)

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    try:
        await asyncio.sleep(0.2)
        response = await service.call("PATCH", "/users/me", headers,
                                      json={"display_name": "after"})
        assert response.status_code == 200
        await eventually(lambda: wire.on(USER_EVENTS, ProfileUpdated, user_id))
        await asyncio.sleep(0.5)  # the event's invalidation ran by now
    finally:
        stop.set()
        await asyncio.gather(*readers)
    for _ in range(5):
        read = await service.call("GET", f"/users/{user_id}", headers)
        assert read.json()["data"]["display_name"] == "after"


@pytest.mark.parametrize("service", ["postgres"], indirect=True)  # the shared cache: Redis
async def test_reads_and_writes_go_on_while_redis_is_down(
        service: Service, wire: Wire, request: pytest.FixtureRequest) -> None:
    user_id, email = new_user()
    await registered(service, wire, user_id, email)
    headers = await service.bearer(user_id, "profile:read", "profile:write")
    redis = request.getfixturevalue("redis")
    await asyncio.to_thread(redis.stop)
    try:
        patched = await service.call("PATCH", "/users/me", headers, json={"display_name": "nc"})
        assert patched.status_code == 200, patched.text
        read = await service.call("GET", "/users/me", headers)
        assert read.status_code == 200 and read.json()["data"]["display_name"] == "nc"
    finally:
        await asyncio.to_thread(redis.restart)


# --- refusals -------------------------------------------------------------------------------


async def test_tokens_and_permissions_are_checked(service: Service, wire: Wire) -> None:
    user_id, email = new_user()
    await registered(service, wire, user_id, email)
    other = await service.bearer(str(uuid.uuid4()), "profile:read", "profile:write")
    owner = await service.bearer(user_id, "profile:read")
    reader = await service.bearer("driver-service", "users:read")
    # A service client whose subject is the user's id is still not that user.
    as_user = await service.bearer(user_id, "profile:read", "profile:write", kind="service")
    cases: list[tuple[str, str, dict[str, str] | None, int]] = [
        ("GET", "/users/me", as_user, 403),
        ("PATCH", "/users/me", as_user, 403),
        ("GET", f"/users/{user_id}", as_user, 403),
        ("GET", "/users/me", None, 401),
        ("GET", "/users/me", {"Authorization": "Bearer not.a.token"}, 401),
        ("GET", "/users/me", {"Authorization": "Basic dXNlcjpwdw=="}, 401),
        ("GET", f"/users/{user_id}", None, 401),
        ("GET", f"/users/{user_id}", other, 403),
        ("GET", f"/users/{user_id}", owner, 200),
        ("GET", f"/users/{user_id.upper()}", owner, 200),
        ("GET", f"/users/{user_id}", reader, 200),
        ("GET", "/users/me", await service.bearer(user_id), 403),
        ("GET", "/users/me", other, 404),  # a valid caller without a profile
        ("GET", "/users/me", reader, 403),
        ("GET", "/users", other, 403),
        ("GET", "/users", reader, 200),
        ("PATCH", f"/users/{user_id}", owner, 403),
        ("PATCH", f"/users/{user_id}", reader, 403),
        ("PATCH", "/users/me", owner, 403),
        ("GET", f"/users/{uuid.uuid4()}", reader, 404),
        ("GET", "/users/not-a-uuid", reader, 422),
    ]
    for method, path, headers, status in cases:
        json = {"display_name": "x"} if method == "PATCH" else None
        response = await service.call(method, path, headers, json=json)
        assert response.status_code == status, (method, path, headers, response.text)
        if status >= 400:
            assert response.json()["error"]["message"], response.text


@pytest.mark.parametrize(("body", "field"), [
    ({"phone": "020 7946 0958"}, "phone"), ({"avatar_url": "ftp://x.org/a.png"}, "avatar_url"),
    ({"email": "new@x.org"}, "email"), ({"display_name": None}, ""),
    ({"preferences": {"language": "klingon"}}, "preferences.language"),
    ({"preferences": {"notification_channels": ["fax"]}}, "preferences.notification_channels.0"),
])
async def test_bad_input_gets_a_422_naming_the_field(
        service: Service, wire: Wire, body: dict[str, Any], field: str) -> None:
    user_id = str(uuid.uuid4())
    headers = await service.bearer(user_id, "profile:write")
    response = await service.call("PATCH", "/users/me", headers, json=body)
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["error"]["fields"]]
    assert any(f.startswith(field) for f in fields), fields


async def test_a_body_that_is_not_json_gets_a_400(service: Service) -> None:
    headers = {**await service.bearer(str(uuid.uuid4()), "profile:write"),
               "content-type": "application/json"}
    response = await service.call("PATCH", "/users/me", headers, content=b"{nope")
    assert response.status_code == 400, response.text


# --- admin list and search ------------------------------------------------------------------


async def test_admins_list_and_search_with_filters_and_sorting(
        service: Service, wire: Wire) -> None:
    tag = unique("s")
    ids = []
    for name in ("carol", "alice", "bob"):
        user_id = str(uuid.uuid4())
        ids.append(user_id)
        await registered(service, wire, user_id, f"{name}.{tag}@example.com")
    admin = await service.admin()
    search = await service.call("GET", "/users", admin, params={
        "display_name__contains": tag.upper(), "sort": "display_name", "size": 2})
    assert search.status_code == 200, search.text
    body = search.json()
    assert body["meta"] == {"page": 1, "size": 2, "total": 3, "pages": 2}
    assert [p["display_name"].split(".")[0] for p in body["data"]] == ["alice", "bob"]
    exact = await service.call("GET", "/users", admin,
                               params={"email": f"bob.{tag}@example.com"})
    assert [p["id"] for p in exact.json()["data"]] == [ids[2]]
    created = (await service.profile_of(ids[1]) or {})["created_at"]
    since = await service.call("GET", "/users", admin, params={
        "created_at__gte": created, "display_name__contains": tag, "sort": "-created_at"})
    assert [p["id"] for p in since.json()["data"]] == [ids[2], ids[1]]
    for params in ({"sort": "phone"}, {"preferences": "x"}, {"created_at__gte": "yesterday"},
                   {"size": 1000}):
        refused = await service.call("GET", "/users", admin, params=params)
        assert refused.status_code == 422, (params, refused.text)


# --- request-reply --------------------------------------------------------------------------


async def test_contact_requests_are_answered_for_known_and_unknown_users(
        service: Service, wire: Wire) -> None:
    user_id, email = new_user()
    await registered(service, wire, user_id, email)
    for asked, found in ((user_id, True), (str(uuid.uuid4()), False), ("nobody", False)):
        reply = await wire.requests.send_request(
            USER_REQUESTS, GetContact(data=GetContactData(user_id=asked), key=asked), timeout=15)
        assert isinstance(reply, Contact)
        assert reply.data.user_id == asked and reply.data.found is found
        assert reply.data.email == (email if found else None)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()
