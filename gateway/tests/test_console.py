"""The operations console against the real gateway (served on a port), a stand-in for auth's
login, the real sample service (core's `/ops` API on its SQLite database), a stand-in for the
order service's saga API and the session's Kafka (tests/console_rig.py): no session is sent to
the login page, a valid token without the admins' permission gets 403, a POST without the
session's CSRF token gets 403 and changes nothing, a dead letter's hostile header is shown
escaped; parked outbox rows requeued and discarded through the service's own API; a saga that
needs attention retried with the operator's token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from core.config import KafkaConfig
from core.messaging import KafkaAdmin, read_topic
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.console_rig import (
    ADMIN,
    HOSTILE,
    PARKED,
    PASSWORD,
    SAGA,
    USER,
    ConsoleStack,
    commit,
    console_stack,
    dead_letter,
    outbox_row,
    park,
    produce,
)
from tests.fixed_registry import FixedRegistry
from tests.helpers import unique

pytestmark = pytest.mark.kafka

PAGES = ["/console", "/console/dead-letters", "/console/dead-letters/some.topic",
         "/console/services", "/console/topics", "/console/edge", "/console/outbox",
         "/console/sagas", f"/console/sagas/order/{SAGA}"]


@pytest.fixture(scope="module")
async def stack(kafka: object) -> AsyncIterator[ConsoleStack]:
    async with console_stack(kafka.bootstrap_servers,  # type: ignore[attr-defined]
                             with_sample=True) as running:
        yield running


@pytest.fixture
def kafka_config(kafka: object) -> KafkaConfig:
    return KafkaConfig(kafka.bootstrap_servers, unique("console"), unique("group"))  # type: ignore[attr-defined]


@pytest.fixture
async def browser(stack: ConsoleStack) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client that keeps cookies and follows nothing by itself."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=20) as client:
        yield client


async def log_in(client: httpx.AsyncClient, email: str) -> httpx.Response:
    form = await client.get("/console/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf, form.text
    return await client.post("/console/login", data={
        "email": email, "password": PASSWORD, "csrf_token": csrf.group(1)})


def session_csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert found, page
    return found.group(1)


@pytest.mark.parametrize("path", PAGES)
async def test_without_a_session_every_page_sends_to_login(browser: httpx.AsyncClient,
                                                           path: str) -> None:
    response = await browser.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"


async def test_an_htmx_request_without_a_session_is_sent_to_login(
        browser: httpx.AsyncClient) -> None:
    response = await browser.post("/console/dead-letters/t/replay", headers={"HX-Request": "true"},
                                  data={"partition": "0", "offset": "0"})
    assert response.status_code == 204 and response.headers["hx-redirect"] == "/console/login"


@pytest.mark.parametrize("path", PAGES)
async def test_a_token_without_the_admin_permission_gets_403(
        stack: ConsoleStack, browser: httpx.AsyncClient, path: str) -> None:
    browser.cookies.set("console_token", stack.token(permissions=["drivers:read"]))
    response = await browser.get(path)
    assert response.status_code == 403
    assert "rbac:manage" in response.text


async def test_logging_in_as_a_non_admin_is_refused_with_the_reason(
        browser: httpx.AsyncClient) -> None:
    response = await log_in(browser, USER)
    assert response.status_code == 403
    assert "lacks the rbac:manage permission" in response.text
    assert "console_token" not in browser.cookies


async def test_a_wrong_password_or_a_forged_token_logs_nobody_in(
        stack: ConsoleStack, browser: httpx.AsyncClient) -> None:
    form = await browser.get("/console/login")
    csrf = session_csrf_login(form.text)
    wrong = await browser.post("/console/login", data={
        "email": ADMIN, "password": "nope", "csrf_token": csrf})
    assert wrong.status_code == 401 and "wrong email or password" in wrong.text
    browser.cookies.set("console_token", stack.token(permissions=["rbac:manage"]) + "x")
    assert (await browser.get("/console/edge")).status_code == 303


def session_csrf_login(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def test_the_login_form_needs_its_own_csrf_token(browser: httpx.AsyncClient) -> None:
    await browser.get("/console/login")  # the cookie is set, but the form field is missing
    response = await browser.post("/console/login", data={"email": ADMIN, "password": PASSWORD})
    assert response.status_code == 403 and "console_token" not in browser.cookies
    forged = await browser.post("/console/login", data={
        "email": ADMIN, "password": PASSWORD, "csrf_token": "guessed"})
    assert forged.status_code == 403 and "console_token" not in browser.cookies


async def test_the_session_cookie_is_httponly_strict_and_scoped(
        stack: ConsoleStack, browser: httpx.AsyncClient) -> None:
    response = await log_in(browser, ADMIN)
    assert response.status_code == 303 and response.headers["location"] == "/console"
    assert stack.auth.state.forwarded[-1] == "127.0.0.1"  # auth throttles by the client
    cookie = next(v for k, v in response.headers.multi_items()
                  if k == "set-cookie" and v.startswith("console_token="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; https gets Secure
    page = await browser.get("/console/edge")
    assert page.status_code == 200 and ADMIN in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and page.headers["cache-control"] == "no-store"


async def test_a_post_without_the_csrf_token_is_refused_and_replays_nothing(
        browser: httpx.AsyncClient, kafka_config: KafkaConfig) -> None:
    topic = unique("console-csrf")
    await dead_letter(kafka_config, topic, "plain")
    await log_in(browser, ADMIN)
    page = await browser.get(f"/console/dead-letters/{topic}")
    token = session_csrf(page.text)
    for extra in ({}, {"csrf_token": "0" * 64}):
        refused = await browser.post(f"/console/dead-letters/{topic}/replay",
                                     data={"partition": "0", "offset": "0", **extra})
        assert refused.status_code == 403 and "CSRF" in refused.text
    logout = await browser.post("/console/logout")
    assert logout.status_code == 403  # logging out is a POST too
    assert await read_topic(kafka_config, topic) == []
    replayed = await browser.post(f"/console/dead-letters/{topic}/replay",
                                  data={"partition": "0", "offset": "0"},
                                  headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert replayed.status_code == 200 and f"replayed by {ADMIN}" in replayed.text
    assert [r.key for r in await read_topic(kafka_config, topic)] == [b"k-1"]


async def test_a_hostile_header_in_a_dead_letter_is_shown_escaped(
        browser: httpx.AsyncClient, kafka_config: KafkaConfig) -> None:
    topic = unique("console-xss")
    await dead_letter(kafka_config, topic, HOSTILE)
    await log_in(browser, ADMIN)
    page = await browser.get(f"/console/dead-letters/{topic}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in page.text
    assert "x-note" in page.text and "bad thing &lt;script&gt;" in page.text
    assert "demo.thing_happened" in page.text and "<td>3</td>" in page.text  # attempts


async def test_replaying_a_letter_that_is_not_there_says_so(
        browser: httpx.AsyncClient, kafka_config: KafkaConfig) -> None:
    topic = unique("console-none")
    await dead_letter(kafka_config, topic, "plain")
    await log_in(browser, ADMIN)
    token = session_csrf((await browser.get(f"/console/dead-letters/{topic}")).text)
    missing = await browser.post(f"/console/dead-letters/{topic}/replay",
                                 data={"partition": "0", "offset": "99", "csrf_token": token})
    assert missing.status_code == 404 and "no dead letter 0/99" in missing.text
    assert await read_topic(kafka_config, topic) == []


async def test_parked_outbox_rows_are_listed_requeued_and_discarded(
        stack: ConsoleStack, browser: httpx.AsyncClient) -> None:
    requeued = await park(stack, unique("w"), f"TOPIC_AUTHORIZATION_FAILED {HOSTILE}")
    discarded = await park(stack, unique("w"), "UNKNOWN_TOPIC")
    await log_in(browser, ADMIN)
    page = await browser.get("/console/outbox")
    assert page.status_code == 200
    assert "TOPIC_AUTHORIZATION_FAILED &lt;script&gt;" in page.text and "<script>" not in page.text
    assert "No operations API" in page.text  # the stand-ins (auth, order) have none
    token = session_csrf(page.text)
    refused = await browser.post("/console/outbox/sample/requeue", data={"row": requeued})
    assert refused.status_code == 403
    assert (await outbox_row(stack, requeued)) == (PARKED, None)

    done = await browser.post("/console/outbox/sample/requeue",
                              data={"row": requeued, "csrf_token": token})
    assert done.status_code == 200 and f"requeued by {ADMIN}" in done.text
    row = await outbox_row(stack, requeued)
    assert row is not None and (row[0] < PARKED or row[1] is not None)  # sent again
    done = await browser.post("/console/outbox/sample/discard",
                              data={"row": discarded, "csrf_token": token})
    assert done.status_code == 200 and "discardd" not in done.text
    assert await outbox_row(stack, discarded) is None
    again = await browser.post("/console/outbox/sample/discard",
                               data={"row": discarded, "csrf_token": token})
    assert again.status_code == 409
    unknown = await browser.post("/console/outbox/nosuch/discard",
                                 data={"row": discarded, "csrf_token": token})
    assert unknown.status_code == 403


async def test_the_services_ops_api_checks_the_token_and_the_permission(
        stack: ConsoleStack) -> None:
    async with httpx.AsyncClient(base_url=stack.sample_url) as client:
        assert (await client.get("/ops/outbox/parked")).status_code == 401
        user = {"Authorization": f"Bearer {stack.token(permissions=['drivers:read'])}"}
        assert (await client.get("/ops/outbox/parked", headers=user)).status_code == 403
        assert (await client.post("/ops/outbox/discard", json={"ids": [1]},
                                  headers=user)).status_code == 403
        admin = {"Authorization": f"Bearer {stack.token(permissions=['rbac:manage'])}"}
        assert (await client.get("/ops/outbox/parked", headers=admin)).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        assert not [p for p in spec["paths"] if p.startswith("/ops")]


async def test_a_saga_that_needs_attention_is_shown_and_retried_with_the_operators_token(
        stack: ConsoleStack, browser: httpx.AsyncClient) -> None:
    await log_in(browser, ADMIN)
    listing = await browser.get("/console/sagas")
    assert listing.status_code == 200 and SAGA in listing.text
    assert "<b>driver" not in listing.text and "&lt;b&gt;driver service away" in listing.text
    assert "<h2>sample</h2>" not in listing.text  # no sagas there: not listed
    page = await browser.get(f"/console/sagas/order/{SAGA}")
    assert "reserve_driver" in page.text and "no driver" in page.text  # the history
    token = session_csrf(page.text)
    assert (await browser.post(f"/console/sagas/order/{SAGA}/retry")).status_code == 403
    retried = await browser.post(f"/console/sagas/order/{SAGA}/retry",
                                 data={"csrf_token": token})
    assert retried.status_code == 200 and f"retried by {ADMIN}" in retried.text
    assert stack.orders.state.tokens[-1] == f"Bearer {browser.cookies['console_token']}"
    again = await browser.post(f"/console/sagas/order/{SAGA}/retry",
                               data={"csrf_token": token})
    assert again.status_code == 409 and "does not need attention" in again.text
    missing = await browser.get("/console/sagas/order/nope")
    assert "no saga nope" in missing.text


async def test_with_the_console_off_its_path_goes_through_the_route_table() -> None:
    app = create_app(GatewaySettings(_env_file=None, gateway_console=False,
                                     jwks_url="http://127.0.0.1:9/.well-known/jwks.json"),
                     registry=FixedRegistry({}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/console/login")
    assert response.status_code == 404 and "no_route" in response.text


async def test_topics_show_end_offsets_and_each_groups_lag(
        browser: httpx.AsyncClient, kafka_config: KafkaConfig) -> None:
    topic, group = unique("console-lag"), unique("console-group")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=1)
    await produce(kafka_config, topic, [(f"k{n}".encode(), b"{}", []) for n in range(5)])
    await commit(kafka_config, group, topic, {0: 2})
    await log_in(browser, ADMIN)
    page = await browser.get("/console/topics")
    row = re.search(rf"<tr>\s*<td>{re.escape(topic)}</td>(.*?)</tr>", page.text, re.S)
    assert row, page.text
    assert "0: 5" in row.group(1)  # partition 0 ends at offset 5
    assert f'<span class="behind">3</span> {group}' in row.group(1)  # committed 2: 3 behind


async def test_services_show_each_instances_health_and_why(browser: httpx.AsyncClient) -> None:
    await log_in(browser, ADMIN)
    page = await browser.get("/console/services")
    assert page.status_code == 200
    order = page.text.split("<h2>order</h2>", 1)[1].split("<h2>", 1)[0]
    assert 'class="status degraded"' in order and "kafka: degraded broker away" in order
    auth = page.text.split("<h2>auth</h2>", 1)[1].split("<h2>", 1)[0]
    assert 'class="status ready"' in auth


async def test_edge_shows_breakers_and_each_routes_limit(browser: httpx.AsyncClient) -> None:
    await log_in(browser, ADMIN)  # through the client: auth's instance gets a breaker
    page = await browser.get("/console/edge")
    assert re.search(r"<td>auth@http://127\.0\.0\.1:\d+</td><td><span class=\"status "
                     r"breaker-closed\">closed</span>", page.text), page.text
    assert "<td>widgets</td><td>/api/widgets</td><td>600 per 60 s</td>" in page.text
    assert "<td>auth-login</td><td>/api/auth/login</td><td>none</td>" in page.text
    assert "Counted in this process" in page.text


async def test_a_topic_without_dead_letters_and_a_bad_topic_name(
        browser: httpx.AsyncClient) -> None:
    await log_in(browser, ADMIN)
    empty = await browser.get(f"/console/dead-letters/{unique('never')}")
    assert empty.status_code == 200 and "No dead letters." in empty.text
    bad = await browser.get("/console/dead-letters/a%20b")
    assert bad.status_code == 403 and "not a topic name" in bad.text


@pytest.mark.parametrize(("peer", "proto", "secure"), [
    ("10.0.0.2", "https", True),        # the trusted balancer terminated TLS
    ("203.0.113.9", "https", False),    # anyone else saying so is not believed
    ("10.0.0.2", "http", False)])
async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(
        peer: str, proto: str, secure: bool) -> None:
    app = create_app(GatewaySettings(_env_file=None, gateway_trusted_proxies=["10.0.0.0/24"],
                                     jwks_url="http://127.0.0.1:9/.well-known/jwks.json"),
                     registry=FixedRegistry({}))
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/console/login", headers={"X-Forwarded-Proto": proto})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("console_login_csrf=") and ("Secure" in cookie) == secure
