"""The static and DNS backends, `watch`'s fan-out, the registry settings and the factory."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from core.config import Settings
from core.service_registry import Change, Instance, RegistryError
from core.service_registry.dns import DnsRegistry, check_template, getaddrinfo
from core.service_registry.factory import registry_from_settings
from core.service_registry.following import LogRegistry
from core.service_registry.static import StaticRegistry, base_url, parse_static
from core.service_registry.watch import Watchers
from tests.helpers import eventually


def static(service: str, address: str, scheme: str = "http") -> Instance:
    return Instance(service=service, instance_id=f"{service}@{address}",
                    url=f"{scheme}://{address}", started_at=0.0)


# -- static


def test_the_static_list_parses_into_instances_by_id() -> None:
    got = parse_static(" user = http://10.0.0.6:8000/, http://10.0.0.5:8000 ;"
                       "auth=https://auth.local;;x.y_z-1=http://[::1]:9000;")
    assert got == {
        "user": (static("user", "10.0.0.5:8000"), static("user", "10.0.0.6:8000")),
        "auth": (static("auth", "auth.local:443", "https"),),
        "x.y_z-1": (static("x.y_z-1", "[::1]:9000"),),
    }
    assert parse_static("") == {} and parse_static(" ; ") == {}


@pytest.mark.parametrize(("spec", "reason"), [
    ("user", "'user' is not service=url"),
    ("user http://x:1", "is not service=url"),
    ("=http://x:1", r"'' is not a service name \(letters, digits, '\.', '_', '-'\)$"),
    ("us er=http://x:1", "'us er' is not a service name"),
    ("-user=http://x:1", "'-user' is not a service name"),
    ("user=http://x:1;user=http://y:1", "service 'user' is listed twice"),
    ("user=http://x:1,http://x:1/", "service 'user' lists one URL twice"),
    ("user=", "service 'user'.*'' is not an http"),
    ("user=ftp://x:1", "'ftp://x:1' is not an http:// or https:// URL with a host"),
    ("user=http://:80", "is not an http:// or https:// URL with a host"),
    ("user=x:1", "is not an http"),
    ("user=http://x:99999", "'http://x:99999' is not a URL"),
    ("user=http://x:1/api", "must be scheme, host and port only"),
    ("user=http://x:1?a=1", "must be scheme, host and port only"),
    ("user=http://x:1#a", "must be scheme, host and port only"),
    ("user=http://me@x:1", "must be scheme, host and port only"),
])
def test_a_bad_static_list_is_refused_naming_the_part(spec: str, reason: str) -> None:
    with pytest.raises(RegistryError, match=f"REGISTRY_STATIC.*{reason}"):
        parse_static(spec)


def test_base_urls_get_their_default_ports() -> None:
    assert base_url("http://h") == ("http://h:80", "h:80")
    assert base_url("https://h/") == ("https://h:443", "h:443")
    assert base_url("http://[::1]:81") == ("http://[::1]:81", "[::1]:81")
    with pytest.raises(RegistryError, match=r"^SERVICE_URL: "):
        base_url("nope", where="SERVICE_URL")
    with pytest.raises(RegistryError, match=r"^URL: 'nope' is not an http"):
        base_url("nope")


async def test_the_static_registry_answers_from_its_list_and_ignores_writes() -> None:
    registry = StaticRegistry.from_spec("auth=http://c:1;user=http://b:1,http://a:1")
    await registry.start()
    await registry.register(static("other", "z:1"))
    await registry.heartbeat()
    await registry.deregister()
    await registry.check()
    assert [i.url for i in await registry.discover("user")] == ["http://a:1", "http://b:1"]
    assert await registry.discover("other") == []
    changes = registry.watch("user")
    first = await anext(changes)
    assert first.service == "user" and len(first.instances) == 2
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(changes), 0.05)
    await registry.stop()


# -- watch


async def test_watchers_yield_the_state_then_changes_of_their_service_only() -> None:
    state = {"user": [static("user", "a:1")], "auth": [static("auth", "b:1")]}
    watchers = Watchers(lambda: state)
    one: AsyncIterator[Change] = watchers.watch("user")
    every: AsyncIterator[Change] = watchers.watch(None)
    assert await anext(one) == Change("user", (static("user", "a:1"),))
    assert [await anext(every), await anext(every)] == [
        Change("auth", (static("auth", "b:1"),)), Change("user", (static("user", "a:1"),))]
    watchers.publish({"user": [static("user", "a:1")]})  # no change: not yielded
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(one), 0.05)
    one = watchers.watch("user")
    await anext(one)
    watchers.publish({"auth": [static("auth", "x:1")]})  # not the service `one` watches
    watchers.publish({"user": []})
    watchers.publish({"auth": []})  # pending again: now after user
    watchers.publish({"user": [static("user", "c:1")]})  # the latest replaces the pending one
    assert await anext(one) == Change("user", (static("user", "c:1"),))
    # `every` is behind: each service once, in the order of their latest changes.
    assert await anext(every) == Change("auth", ())
    assert await anext(every) == Change("user", (static("user", "c:1"),))
    watchers.publish({"ghost": []})  # a service never seen, still empty: no change
    watchers.publish({"user": []})
    assert await anext(one) == Change("user", ())
    assert await anext(every) == Change("user", ())
    watchers.publish({"auth": [static("auth", "y:1")]})
    watchers.publish({"user": [static("user", "d:1")]})
    assert await anext(one) == Change("user", (static("user", "d:1"),))  # auth never reaches it
    watchers.publish({"user": [static("user", "d:1")]})  # what it yielded last: not again
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(one), 0.05)
    await one.aclose()  # type: ignore[attr-defined]
    await every.aclose()  # type: ignore[attr-defined]
    watchers.publish({"user": []})  # nobody listens any more: nothing is kept


async def test_a_watcher_of_everything_when_nothing_is_known_yet() -> None:
    watchers = Watchers(lambda: {})
    changes = watchers.watch(None)
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)
    watchers.publish({"user": [static("user", "a:1")]})
    assert await asyncio.wait_for(pending, 1) == Change("user", (static("user", "a:1"),))
    watchers.publish({"user": []})
    assert await anext(changes) == Change("user", ())
    await changes.aclose()  # type: ignore[attr-defined]


async def test_a_watcher_of_an_unknown_service_starts_empty() -> None:
    watchers = Watchers(lambda: {})
    changes = watchers.watch("ghost")
    assert await anext(changes) == Change("ghost", ())
    watchers.publish({"ghost": [static("ghost", "a:1")]})
    assert (await anext(changes)).instances == (static("ghost", "a:1"),)
    await changes.aclose()  # type: ignore[attr-defined]


# -- DNS


class FakeDns:
    def __init__(self, answers: dict[str, list[str] | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        answer = self.answers[host]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


async def test_dns_names_become_instances_and_are_cached() -> None:
    dns = FakeDns({"user.prod.svc.cluster.local": ["10.0.0.6", "10.0.0.5", "fd00::1"]})
    registry = DnsRegistry(namespace="prod", port=8080, resolver=dns)
    found = await registry.discover("user")
    assert [i.url for i in found] == ["http://10.0.0.5:8080", "http://10.0.0.6:8080",
                                      "http://[fd00::1]:8080"]
    assert found[0] == Instance(service="user", instance_id="user@10.0.0.5:8080",
                                url="http://10.0.0.5:8080", started_at=0.0)
    await registry.discover("user")
    assert dns.asked == [("user.prod.svc.cluster.local", 8080)]  # cached
    await registry.register(found[0])
    await registry.heartbeat()
    await registry.deregister()


async def test_dns_refreshes_in_the_background_and_watch_sees_it() -> None:
    dns = FakeDns({"user": ["10.0.0.5"]})
    registry = DnsRegistry("{service}", scheme="https", port=443, refresh=0.05, resolver=dns)
    await registry.start()
    await registry.start()
    changes = registry.watch("user")
    assert [i.url for i in (await anext(changes)).instances] == ["https://10.0.0.5:443"]
    dns.answers["user"] = ["10.0.0.5", "10.0.0.7"]
    change = await asyncio.wait_for(anext(changes), 5)
    assert [i.url for i in change.instances] == ["https://10.0.0.5:443", "https://10.0.0.7:443"]
    await changes.aclose()  # type: ignore[attr-defined]
    await registry.stop()
    await registry.stop()


async def test_a_dns_failure_keeps_the_last_answer_and_a_missing_name_has_none() -> None:
    dns = FakeDns({"user": ["10.0.0.5"], "gone": socket.gaierror(socket.EAI_NONAME, "nx")})
    registry = DnsRegistry("{service}", resolver=dns)
    assert len(await registry.discover("user")) == 1
    dns.answers["user"] = socket.gaierror(socket.EAI_AGAIN, "try again")
    await registry.resolve("user")
    assert len(await registry.discover("user")) == 1
    dns.answers["user"] = OSError("network down")
    await registry.resolve("user")
    assert len(await registry.discover("user")) == 1
    assert await registry.discover("gone") == []
    dns.answers["user"] = socket.gaierror(socket.EAI_NONAME, "nx")
    await registry.resolve("user")
    assert await registry.discover("user") == []


async def test_a_dns_lookup_that_hangs_times_out_and_is_retried_later() -> None:
    async def hangs(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return []

    registry = DnsRegistry("{service}", resolver=hangs, resolve_timeout=0.05)
    assert await asyncio.wait_for(registry.discover("user"), 2) == []
    assert "user" in registry._cache  # the refresher will try it again


async def test_a_first_dns_failure_is_empty_and_retried_later() -> None:
    dns = FakeDns({"user": socket.gaierror(socket.EAI_AGAIN, "try again")})
    registry = DnsRegistry("{service}", resolver=dns)
    assert await registry.discover("user") == []
    assert registry._cache == {"user": []}


def test_dns_defaults() -> None:
    registry = DnsRegistry()
    assert registry.host("user") == "user.default.svc.cluster.local"
    assert (registry.refresh, registry.resolve_timeout) == (5.0, 2.0)


async def test_dns_watch_of_one_service_and_of_all() -> None:
    dns = FakeDns({"a": ["10.0.0.1"], "user": ["10.0.0.2"]})
    registry = DnsRegistry("{service}", resolver=dns)
    await registry.discover("a")
    one = registry.watch("user")
    assert (await anext(one)).service == "user"
    every = registry.watch()
    assert [(await anext(every)).service, (await anext(every)).service] == ["a", "user"]
    await one.aclose()  # type: ignore[attr-defined]
    await every.aclose()  # type: ignore[attr-defined]
    assert dns.asked == [("a", 8000), ("user", 8000)]


async def test_the_dns_refresher_is_named_and_stops() -> None:
    registry = DnsRegistry("{service}", resolver=FakeDns({}))
    await registry.start()
    task = registry._refresher
    assert task is not None and task.get_name() == "registry-dns-refresh"
    await registry.stop()
    assert registry._refresher is None and task.cancelled()


async def test_the_first_dns_refresh_comes_one_interval_after_start() -> None:
    dns = FakeDns({"user": ["10.0.0.5"]})
    registry = DnsRegistry("{service}", refresh=60.0, resolver=dns)
    await registry.discover("user")  # just resolved: a refresh at once would repeat it
    await registry.start()
    for _ in range(20):  # turns of the loop in which a refresh due now would have run
        await asyncio.sleep(0)
    assert dns.asked == [("user", 8000)]
    await registry.stop()


async def test_a_dns_refresh_failing_unexpectedly_is_logged_once_and_the_refresher_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """A resolver error that is no DNS answer (a bug, an encoding error) has no rule of its
    own: each refresh it ends is one of a streak, logged once, and refreshing goes on."""
    dns = FakeDns({"user": ["10.0.0.5"]})
    registry = DnsRegistry("{service}", refresh=0.02, resolver=dns)
    caplog.set_level(logging.INFO, "core.service_registry.dns")
    assert len(await registry.discover("user")) == 1
    dns.answers["user"] = RuntimeError("a resolver bug")
    await registry.start()
    await eventually(lambda: len(dns.asked) >= 4, timeout=10)
    failures = len(dns.asked) - 1
    dns.answers["user"] = ["10.0.0.7"]
    await eventually(lambda: "refreshing names again" in caplog.text, timeout=10)
    assert [i.url for i in await registry.discover("user")] == ["http://10.0.0.7:8000"]
    await registry.stop()
    records = [r for r in caplog.records if r.name == "core.service_registry.dns"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.ERROR, "registry: refreshing names failed"),
        (logging.INFO, f"registry: refreshing names again after {failures} failures")]
    assert records[0].exc_info is not None and str(records[0].exc_info[1]) == "a resolver bug"


async def test_the_real_resolver_finds_localhost() -> None:
    assert "127.0.0.1" in await getaddrinfo("localhost", 80)
    assert await getaddrinfo("127.0.0.2", 80) == ["127.0.0.2"]
    registry = DnsRegistry("{service}")
    assert "http://127.0.0.1:8000" in [i.url for i in await registry.discover("localhost")]


@pytest.mark.parametrize("template", ["{service}.{namespace}.svc", "{service}"])
def test_good_dns_templates(template: str) -> None:
    check_template(template)


@pytest.mark.parametrize("template", ["static.local", "{namespace}", "{service}.{zone}",
                                      "{service", "{service}.{}"])
def test_bad_dns_templates_are_refused(template: str) -> None:
    with pytest.raises(RegistryError, match="REGISTRY_DNS_TEMPLATE"):
        check_template(template)


def test_a_bad_dns_template_says_what_it_needs() -> None:
    with pytest.raises(RegistryError, match=r"^REGISTRY_DNS_TEMPLATE 'x' must contain \{service\} "
                                            r"and no placeholder but \{namespace\}$"):
        check_template("x")


# -- settings and the factory


@pytest.mark.parametrize(("env", "reason"), [
    ({"registry_ttl": 6, "registry_heartbeat_interval": 2.5},
     r"REGISTRY_HEARTBEAT_INTERVAL \(2.5s\) must be at most a third of REGISTRY_TTL \(6s\)"),
    ({"registry_ttl": 10, "registry_grace": 19},
     r"REGISTRY_GRACE \(19s\) must be at least twice REGISTRY_TTL \(10s\)"),
    ({"service_url": "http://h:1/api"}, "SERVICE_URL: 'http://h:1/api' must be scheme"),
    ({"registry_backend": "static", "registry_static": "user"}, "REGISTRY_STATIC: 'user'"),
    ({"registry_backend": "dns", "registry_dns_template": "x"}, "REGISTRY_DNS_TEMPLATE 'x'"),
    ({"registry_backend": "zookeeper"}, "registry_backend"),
    ({"registry_ttl": 0}, "registry_ttl"),
])
def test_registry_settings_are_checked_with_clear_reasons(
        env: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(**env)  # type: ignore[arg-type]


def test_the_edges_of_the_registry_settings_are_accepted() -> None:
    Settings(registry_ttl=6, registry_heartbeat_interval=2, registry_grace=12)
    Settings(registry_static="user", registry_dns_template="x")  # unused by the kafka backend


def test_the_advertised_url() -> None:
    assert Settings(service_url="http://svc.local/").advertised_url() == "http://svc.local:80"
    assert Settings(service_host="10.1.2.3", service_port=9000).advertised_url() == (
        "http://10.1.2.3:9000")


def test_the_factory_builds_the_backend_the_settings_name() -> None:
    assert isinstance(registry_from_settings(Settings()), LogRegistry)
    kafka = registry_from_settings(Settings(registry_ttl=9, registry_heartbeat_interval=1,
                                            registry_grace=30))
    assert isinstance(kafka, LogRegistry)
    assert (kafka.ttl, kafka.heartbeat_interval, kafka.table.grace) == (9, 1, 30)
    static_ = registry_from_settings(Settings(registry_backend="static",
                                              registry_static="a=http://x:1"))
    assert isinstance(static_, StaticRegistry)
    dns = registry_from_settings(Settings(registry_backend="dns", registry_dns_refresh=2,
                                          registry_dns_template="{service}.{namespace}",
                                          registry_dns_namespace="ns"))
    assert isinstance(dns, DnsRegistry) and dns.refresh == 2 and dns.host("a") == "a.ns"
