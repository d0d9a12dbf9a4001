"""Which registry records a reader believes: signed by a platform key, fresh, newer than
the last one seen for the instance, and pointing into the networks the platform runs in.

Anyone who can write to the registry topic could otherwise announce an instance of `auth`
at an address of their own and receive its share of the logins. Kafka ACLs (infra/kafka/)
narrow who can write; `RecordTrust` makes what a writer says worth nothing without the
key the services share (`REGISTRY_SIGNING_KEY` or `REGISTRY_SIGNING_KEY_FILE`).

The seal. A writer adds `signed_at` and `expires_at` (its wall clock, epoch seconds; the
record vouches for one TTL) and `sig`: HMAC-SHA256 over every other field of the record
(service, instance id, url, version, metadata, both times) in a canonical JSON form, under
a domain prefix. So no field can be changed, and an old record cannot be passed off as new.

Replays. A record copied from the topic and written again is still correctly signed. It is
refused when it expired (`expires_at` + `skew` is past by the reader's clock: nothing older
than one TTL and the allowed skew comes back), and when it is not newer than the last record
this reader accepted for that instance id, or than the tombstone that followed it (so a
deregistered instance cannot be resurrected by its last heartbeat). What is left is a copy,
younger than a TTL, of what the instance itself said: its own address, which it held a
moment ago. Tombstones carry no value, so they cannot be signed: a rogue tombstone hides an
instance until its next heartbeat (seconds), and the ACLs are what keep it out.

Key rotation: the first key signs, every key verifies; add the new key second everywhere,
then first, then drop the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from core.service_registry.base import Instance, RegistryError

log = logging.getLogger(__name__)

MIN_KEY_BYTES = 32
"""A shared HMAC key shorter than this is refused at start (RFC 2104: at least the hash's
output length)."""
_DOMAIN = b"platform.registry/record/v1\n"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"\.?{_LABEL}(?:\.{_LABEL})*")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RecordRefusedError(RegistryError):
    """A well-formed record this reader will not believe; `reason` names the rule."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_keys(key: str | None, key_file: str | None) -> list[bytes]:
    """The signing keys from `REGISTRY_SIGNING_KEY` and/or the lines of
    `REGISTRY_SIGNING_KEY_FILE` (first key signs). Raises RegistryError naming the setting."""
    keys: list[bytes] = []
    if key:
        keys.append(key.strip().encode())
    if key_file:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RegistryError(f"REGISTRY_SIGNING_KEY_FILE {key_file}: {exc.strerror}") from None
        if path.stat().st_mode & 0o077:
            log.warning("registry: %s is readable by other users; make it 0600", key_file)
        keys += [line.strip().encode() for line in text.splitlines() if line.strip()]
        if not keys:
            raise RegistryError(f"REGISTRY_SIGNING_KEY_FILE {key_file} holds no key")
    for k in keys:
        if len(k) < MIN_KEY_BYTES:
            raise RegistryError(f"a registry signing key must be at least {MIN_KEY_BYTES} "
                                f"bytes, got {len(k)}")
    return keys


class AllowedNetworks:
    """Where an instance may be: IP networks (`10.0.0.0/8`, `::1`), host names (`auth`), or
    domain suffixes (`.svc.cluster.local`). Empty: anywhere."""

    def __init__(self, entries: Iterable[str]) -> None:
        networks: list[IPNetwork] = []
        names: list[str] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not _HOST.fullmatch(entry):
                    raise RegistryError(f"REGISTRY_ALLOWED_NETWORKS: {raw!r} is not a network, "
                                        "host name or .domain") from None
                names.append(entry)
        self.networks = tuple(networks)
        self.names = tuple(names)

    def __bool__(self) -> bool:
        return bool(self.networks or self.names)

    def allows(self, url: str) -> bool:
        if not self:
            return True
        host = (urlsplit(url).hostname or "").lower()
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return any(host == n or (n.startswith(".") and host.endswith(n))
                       for n in self.names)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


@dataclass(slots=True)
class _Seen:
    signed_at: float
    expires_at: float
    open: bool = True
    """False once a tombstone followed: the same record again would resurrect it."""


class RecordTrust:
    """Seals this process's records and judges everyone's. One event loop.

    `refused` counts the records refused, by reason (`unsigned`, `signature`, `expired`,
    `replayed`, `network`), for tests, health and metrics.
    """

    def __init__(self, keys: Sequence[bytes], *, ttl: float, skew: float = 5.0,
                 networks: AllowedNetworks | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if skew < 0 or ttl <= 0:
            raise RegistryError("need ttl > 0 and skew >= 0")
        self.keys = tuple(keys)
        self.networks = networks or AllowedNetworks(())
        self.ttl = ttl
        self.skew = skew
        self.clock = clock
        self.refused: Counter[str] = Counter()
        self._seen: dict[str, _Seen] = {}
        self._last_signed = 0.0

    @property
    def signing(self) -> bool:
        return bool(self.keys)

    @property
    def remembered(self) -> int:
        """Instance ids whose last record is remembered (to refuse replays of older ones)."""
        return len(self._seen)

    # -- writing

    def seal(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with its seal, when there is a key (else as it is)."""
        if not self.keys:
            return body
        # Never twice the same time, never backwards: readers refuse a record that is not
        # newer than the last one they accepted for the instance.
        now = max(self.clock(), self._last_signed + 1e-3)
        self._last_signed = now
        sealed = {**body, "signed_at": now, "expires_at": now + self.ttl}
        sealed["sig"] = _mac(self.keys[0], sealed).hex()
        return sealed

    # -- reading

    def admit(self, instance: Instance, value: bytes, timestamp_ms: int | None) -> None:
        """Return if `instance` (decoded from `value`, appended to the log at `timestamp_ms`)
        may be believed; else raise `RecordRefusedError` saying why, and count it, unless it is
        only history (reason `stale`: expired, but appended to the log while it was valid)."""
        try:
            self._judge(instance, value, timestamp_ms)
        except RecordRefusedError as refused:
            if refused.reason != "stale":
                self.refused[refused.reason] += 1
            raise

    def buried(self, instance_id: str) -> None:
        """A tombstone for `instance_id` was read: no record seen so far may bring it back."""
        seen = self._seen.get(instance_id)
        if seen is not None:
            seen.open = False

    def forget_expired(self) -> None:
        """Drop what every record it could refuse as a replay is refused for anyway: expiry."""
        limit = self.clock() - self.skew
        for instance_id in [i for i, s in self._seen.items() if s.expires_at < limit]:
            del self._seen[instance_id]

    def _judge(self, instance: Instance, value: bytes, timestamp_ms: int | None) -> None:
        where = f"{instance.service} instance {instance.instance_id} at {instance.url}"
        if self.keys:
            signed_at, expires_at = self._verify(json.loads(value), where)
            if self.clock() > expires_at + self.skew:
                appended_valid = (timestamp_ms is not None
                                  and timestamp_ms / 1000 <= expires_at + self.skew)
                raise RecordRefusedError("stale" if appended_valid else "expired",
                                         f"{where}: the record expired at {_iso(expires_at)} "
                                         f"(allowed skew {self.skew:g}s)")
            seen = self._seen.get(instance.instance_id)
            if seen is not None and (signed_at < seen.signed_at
                                     or (signed_at == seen.signed_at and not seen.open)):
                raise RecordRefusedError("replayed", f"{where}: signed at {_iso(signed_at)}, not "
                                         "after the instance's last record or tombstone")
            if seen is None or signed_at > seen.signed_at:
                self._seen[instance.instance_id] = _Seen(signed_at, expires_at)
        if not self.networks.allows(instance.url):
            raise RecordRefusedError("network", f"{where}: the address is outside "
                                     "REGISTRY_ALLOWED_NETWORKS")

    def _verify(self, body: Any, where: str) -> tuple[float, float]:
        if not isinstance(body, dict) or "sig" not in body:
            raise RecordRefusedError("unsigned", f"{where}: the record is not signed")
        sig = body["sig"]
        try:
            given = bytes.fromhex(sig) if isinstance(sig, str) else b""
            macs = [_mac(key, body) for key in self.keys]
        except (ValueError, TypeError):  # not hex; a value JSON cannot write back (NaN)
            given, macs = b"", []
        if not any(hmac.compare_digest(given, mac) for mac in macs):
            raise RecordRefusedError("signature", f"{where}: the signature does not match any key")
        signed_at, expires_at = body.get("signed_at"), body.get("expires_at")
        if not (_finite(signed_at) and _finite(expires_at)):  # signed, so a writer's bug
            raise RecordRefusedError("signature", f"{where}: signed_at/expires_at are not numbers")
        return float(signed_at), float(expires_at)


def _mac(key: bytes, body: dict[str, Any]) -> bytes:
    canonical = json.dumps({k: v for k, v in body.items() if k != "sig"}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hmac.new(key, _DOMAIN + canonical.encode(), hashlib.sha256).digest()


def _finite(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

