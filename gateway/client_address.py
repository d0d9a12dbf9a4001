"""Who the client is: its address, believed through the proxies we trust and no others.

A client can write any `X-Forwarded-For` it likes, so the header is read only when the peer
(the TCP connection's other end) is one of `GATEWAY_TRUSTED_PROXIES`, and then only from the
right: each trusted proxy appended the address it saw, so the rightmost address that is not
one of ours is the first one nobody we trust could have made up. Everything left of it is the
client's own say and is neither believed nor forwarded.

Per request, with no trusted proxies (the default), `client_ip` is one dict lookup and
`forwarded_headers` one pass over the headers for Host; the address parsing only happens
when the peer is a trusted proxy, and is cached per distinct address.

The ASGI server must not rewrite the peer itself: uvicorn's `proxy_headers` (on by default,
trusting 127.0.0.1) must be off, or any local client could set its own address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from starlette.types import Scope

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"
"""The client address when the server gives none (a Unix socket)."""

FORWARDED_HEADER_NAMES = frozenset({b"x-forwarded-for", b"x-forwarded-proto",
                                    b"x-forwarded-host", b"forwarded"})
"""What a client sent under these names is dropped by the proxy; `forwarded_headers` gives
the gateway's own."""

_SANE_HOST = re.compile(rb"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])"
                        rb"(?::[0-9]{1,5})?")


class TrustedProxies:
    """The networks whose `X-Forwarded-For` is believed. Immutable; safe to share.

    A bare address is a /32 (or /128); host bits after the prefix are ignored. An entry that
    is not an address or network raises ValueError naming it, at start-up.
    """

    def __init__(self, cidrs: Iterable[str]) -> None:
        networks: list[IPNetwork] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError as e:
                raise ValueError(f"trusted proxy {cidr!r} is not an IP address or CIDR") from e
        self.networks: tuple[IPNetwork, ...] = tuple(networks)
        # Per instance, bounded: the peers are a few load balancers, the XFF entries the
        # clients; an attacker cycling addresses only evicts entries, never grows memory.
        self._trusted = lru_cache(maxsize=4096)(self._lookup)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]})"

    def trusts(self, address: str) -> tuple[str, bool] | None:
        """`(canonical address, trusted?)`, or None when `address` is not an IP address."""
        return self._trusted(address)

    def _lookup(self, address: str) -> tuple[str, bool] | None:
        ip = _parse(address)
        if ip is None:
            return None
        return str(ip), any(ip in network for network in self.networks)


@lru_cache(maxsize=4096)
def _canonical(address: str) -> str | None:
    """`address` as `client_ip` spells it (None when it is not one); cached like `trusts`."""
    ip = _parse(address)
    return None if ip is None else str(ip)


def _parse(address: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; they are IPv4 clients.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _forwarded_for(headers: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """Every X-Forwarded-For entry, left to right (repeated fields read as one list)."""
    return [entry for name, value in headers if name == b"x-forwarded-for"
            for entry in value.decode("latin-1").split(",")]


def client_ip(scope: Scope, trusted: TrustedProxies) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    rightmost `X-Forwarded-For` entry that is not a trusted proxy. An entry that is not an
    IP address ends the walk at the last trusted hop (what follows it cannot be believed)."""
    peer = _peer(scope)
    if peer is None:
        return UNKNOWN
    if not trusted:
        return peer
    seen = trusted.trusts(peer)
    if seen is None or not seen[1]:
        return peer
    last = seen[0]
    for entry in reversed(_forwarded_for(scope["headers"])):
        hop = trusted.trusts(entry)
        if hop is None:
            return last
        if not hop[1]:
            return hop[0]
        last = hop[0]
    return last


def forwarded_headers(scope: Scope, client_ip: str) -> list[tuple[bytes, bytes]]:
    """The `X-Forwarded-*` headers the gateway sends upstream, in place of any the client sent.

    `x-forwarded-for` is the chain from `client_ip` (as `client_ip()` found it) through the
    trusted proxies, plus the peer; when the client is the peer, just the peer: an untrusted
    client's own X-Forwarded-For is dropped, never appended to. `x-forwarded-proto` is the
    scheme the gateway was reached by; `x-forwarded-host` the Host header, when it looks like
    a host (and is left out otherwise).
    """
    headers: list[tuple[bytes, bytes]] = []
    peer = _peer(scope)
    if peer is not None:
        chain = peer if client_ip == peer else _chain(scope["headers"], client_ip, peer)
        headers.append((b"x-forwarded-for", chain.encode("latin-1")))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
    for name, value in scope["headers"]:
        if name == b"host":
            if len(value) <= 261 and _SANE_HOST.fullmatch(value):
                headers.append((b"x-forwarded-host", value))
            break
    return headers


def _chain(headers: Sequence[tuple[bytes, bytes]], client: str, peer: str) -> str:
    """`client, proxy1, ..., peer`: the X-Forwarded-For entries from the rightmost one that is
    `client` onwards (canonical), and the peer. Only called when the peer is trusted."""
    hops = [peer]
    for entry in reversed(_forwarded_for(headers)):
        hop = _canonical(entry)
        if hop is None:
            break
        hops.append(hop)
        if hops[-1] == client:
            return ", ".join(reversed(hops))
    return peer  # not found (client_ip() was given another scope): the peer alone, no guess
