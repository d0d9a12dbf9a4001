"""The client's address: the peer's, or, from a trusted proxy only, the rightmost address in
X-Forwarded-For that is not ours; and the X-Forwarded-* headers the gateway sends on."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.client_address import TrustedProxies, client_ip, forwarded_headers

LB = "10.0.0.5"
NETWORKS = ["10.0.0.0/24", "2001:db8:ff::/48"]


def trusted() -> TrustedProxies:
    """A fresh one per use: an instance caches its answers, and a cache filled before mutmut
    forks its mutant runs would answer for the original code."""
    return TrustedProxies(NETWORKS)


def scope(peer: str | None = "203.0.113.7", *headers: tuple[str, str],
          scheme: str = "http") -> dict[str, Any]:
    return {"type": "http", "scheme": scheme,
            "client": None if peer is None else (peer, 51234),
            "headers": [(k.encode(), v.encode()) for k, v in headers]}


def forwarded(s: dict[str, Any], proxies: TrustedProxies | None = None) -> dict[bytes, bytes]:
    return dict(forwarded_headers(s, client_ip(s, trusted() if proxies is None else proxies)))


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_claims() -> None:
    s = scope("203.0.113.7", ("x-forwarded-for", "1.1.1.1"))
    assert client_ip(s, TrustedProxies([])) == "203.0.113.7"
    assert forwarded(s, TrustedProxies([]))[b"x-forwarded-for"] == b"203.0.113.7"


def test_no_peer_is_unknown_and_forwards_no_address() -> None:
    s = scope(None, ("x-forwarded-for", "1.1.1.1"))
    assert client_ip(s, trusted()) == "unknown"
    assert b"x-forwarded-for" not in forwarded(s)


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored_and_not_forwarded() -> None:
    s = scope("203.0.113.7", ("x-forwarded-for", "10.0.0.1, 1.1.1.1"))
    assert client_ip(s, trusted()) == "203.0.113.7"
    assert forwarded(s)[b"x-forwarded-for"] == b"203.0.113.7"


def test_through_a_trusted_proxy_the_address_it_saw_is_the_client() -> None:
    s = scope(LB, ("x-forwarded-for", "198.51.100.9"))
    assert client_ip(s, trusted()) == "198.51.100.9"
    assert forwarded(s)[b"x-forwarded-for"] == b"198.51.100.9, 10.0.0.5"


def test_the_walk_stops_at_the_first_untrusted_address_from_the_right() -> None:
    # The client wrote "6.6.6.6" itself; the LB in front of ours appended what it saw.
    s = scope(LB, ("x-forwarded-for", "6.6.6.6, 198.51.100.9, 10.0.0.2"))
    assert client_ip(s, trusted()) == "198.51.100.9"
    assert forwarded(s)[b"x-forwarded-for"] == b"198.51.100.9, 10.0.0.2, 10.0.0.5", (
        "the client's own part of the chain is dropped")


def test_repeated_header_fields_read_as_one_list_in_order() -> None:
    s = scope(LB, ("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.9 ,10.0.0.2"))
    assert client_ip(s, trusted()) == "198.51.100.9"


def test_a_chain_of_only_trusted_proxies_gives_the_leftmost_of_them() -> None:
    s = scope(LB, ("x-forwarded-for", "10.0.0.3, 10.0.0.2"))
    assert client_ip(s, trusted()) == "10.0.0.3"
    assert forwarded(s)[b"x-forwarded-for"] == b"10.0.0.3, 10.0.0.2, 10.0.0.5"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    s = scope(LB)
    assert client_ip(s, trusted()) == LB
    assert forwarded(s)[b"x-forwarded-for"] == LB.encode()


@pytest.mark.parametrize("garbage", ["unknown", "", "1.2.3.4:5678", "999.1.1.1", "_hidden",
                                     "[2001:db8::1]", "1.2.3.4\x00"])
def test_an_entry_that_is_not_an_address_ends_the_walk_at_the_last_trusted_hop(
    garbage: str,
) -> None:
    s = scope(LB, ("x-forwarded-for", f"198.51.100.9, {garbage}, 10.0.0.2"))
    assert client_ip(s, trusted()) == "10.0.0.2", "what is left of garbage cannot be believed"
    assert forwarded(s)[b"x-forwarded-for"] == b"10.0.0.2, 10.0.0.5"
    right_there = scope(LB, ("x-forwarded-for", f"198.51.100.9, {garbage}"))
    assert client_ip(right_there, trusted()) == LB


def test_ipv6_clients_and_proxies_in_canonical_form() -> None:
    s = scope("2001:db8:ff::1", ("x-forwarded-for", "2001:DB8:0:0::7, 2001:db8:ff:0::2"))
    assert client_ip(s, trusted()) == "2001:db8::7", "one client, one spelling, one bucket"
    assert forwarded(s)[b"x-forwarded-for"] == b"2001:db8::7, 2001:db8:ff::2, 2001:db8:ff::1"
    assert client_ip(scope("2001:db8:1::1", ("x-forwarded-for", "1.1.1.1")),
                     trusted()) == "2001:db8:1::1"


def test_an_ipv4_mapped_peer_is_the_ipv4_address_it_maps() -> None:
    s = scope("::ffff:10.0.0.5", ("x-forwarded-for", "::ffff:198.51.100.9"))
    assert client_ip(s, trusted()) == "198.51.100.9"
    assert forwarded(s)[b"x-forwarded-for"] == b"198.51.100.9, ::ffff:10.0.0.5"


def test_bare_addresses_and_host_bits_are_accepted_as_networks() -> None:
    proxies = TrustedProxies([" 192.0.2.1 ", "172.17.0.1/16", "::1"])
    assert [str(n) for n in proxies.networks] == ["192.0.2.1/32", "172.17.0.0/16", "::1/128"]
    assert client_ip(scope("172.17.9.9", ("x-forwarded-for", "1.1.1.1")), proxies) == "1.1.1.1"
    assert client_ip(scope("::1", ("x-forwarded-for", "1.1.1.1")), proxies) == "1.1.1.1"


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "10.0.0", "lb.internal", "", "10.0.0.0/8x"])
def test_a_bad_cidr_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=f"trusted proxy {bad!r} is not an IP address or CIDR"):
        TrustedProxies(["10.0.0.0/8", bad])


def test_proto_is_the_scheme_the_gateway_was_reached_by() -> None:
    s = scope("203.0.113.7", ("x-forwarded-proto", "https"), scheme="http")
    assert forwarded(s)[b"x-forwarded-proto"] == b"http"
    assert forwarded(scope(scheme="https"))[b"x-forwarded-proto"] == b"https"


@pytest.mark.parametrize("host", ["api.example.com", "api.example.com:8443", "localhost",
                                  "127.0.0.1:8000", "[::1]:8000", "[2001:db8::1]"])
def test_a_sane_host_is_forwarded(host: str) -> None:
    assert forwarded(scope("203.0.113.7", ("host", host)))[b"x-forwarded-host"] == host.encode()


@pytest.mark.parametrize("host", ["evil.com/path", "a b", "x" * 300, "host:99999999",
                                  "-leading.dash", "", "h\r\nx-injected: 1", "user@host"])
def test_an_insane_host_is_left_out(host: str) -> None:
    assert b"x-forwarded-host" not in forwarded(scope("203.0.113.7", ("host", host)))


def test_forwarded_headers_are_only_the_gateways_own() -> None:
    s = scope("203.0.113.7", ("host", "api.example.com"), ("x-forwarded-host", "evil.com"),
              ("forwarded", "for=1.1.1.1"))
    assert forwarded_headers(s, client_ip(s, trusted())) == [
        (b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"api.example.com")]


def test_an_untrusted_peer_naming_itself_in_the_header_is_forwarded_once() -> None:
    s = scope("203.0.113.7", ("x-forwarded-for", "203.0.113.7"))
    assert forwarded(s)[b"x-forwarded-for"] == b"203.0.113.7"


def test_a_client_address_the_chain_does_not_hold_forwards_the_peer_alone() -> None:
    """`client_ip` of another scope: no guess at a chain, only what is known."""
    for chain in ("198.51.100.9", "198.51.100.9, not-an-address"):
        s = scope(LB, ("x-forwarded-for", chain))
        assert dict(forwarded_headers(s, "192.0.2.1"))[b"x-forwarded-for"] == LB.encode()


def test_a_scope_without_a_scheme_is_http() -> None:
    """ASGI makes `scheme` optional, defaulting to http."""
    s = scope()
    del s["scheme"]
    assert forwarded(s)[b"x-forwarded-proto"] == b"http"



def test_repr_names_the_networks() -> None:
    assert repr(trusted()) == "TrustedProxies(['10.0.0.0/24', '2001:db8:ff::/48'])"
