"""`VerifiedTokens`: the principals of tokens the edge verified, so a client's repeated token
costs a hash and a dictionary lookup instead of a signature check.

- keyed by the SHA-256 of the token (a tampered token is another key, and a hit also compares
  the token itself, so no collision can stand in for a verification);
- an entry is good until the token's `exp`, never past it (the verifier's leeway is not
  extended to cached tokens), and at most `seconds` when that is set;
- an entry remembers the key that verified it, and is dropped as soon as the key source no
  longer gives that very key for its kid: a key withdrawn from the JWKS, or replaced under the
  same kid, stops its tokens at the next refresh exactly as it does without the cache;
- only verified tokens enter, so made-up ones cannot fill it; at `max_entries` the least
  recently used goes (LRU). One event loop, no locks.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from core.security import (
    JwksClient,
    KeySource,
    LocalKeySource,
    Principal,
    StaticKeySource,
    VerificationKey,
)

KeyLookup = Callable[[str], VerificationKey | None]
"""The key a source holds for a kid right now, from memory (no fetch, no await)."""


class _Entry(NamedTuple):
    principal: Principal
    until: float
    kid: str
    key: VerificationKey


def key_lookup(source: KeySource) -> KeyLookup | None:
    """How to ask `source` for a kid's current key without a fetch; None for a source that
    cannot say (then nothing is cached: a key's removal could not be honoured)."""
    if isinstance(source, JwksClient | StaticKeySource):

        def lookup(kid: str) -> VerificationKey | None:
            # Read each time: JwksClient swaps its whole mapping on each refresh.
            return source.keys.get(kid)

        return lookup
    if isinstance(source, LocalKeySource):
        return source.manager.get
    return None


class VerifiedTokens:
    """See the module docstring. `seconds`: an extra bound on an entry's life (None: the
    token's `exp` alone; 0: cache nothing)."""

    def __init__(self, lookup: KeyLookup | None, clock: Callable[[], float], *,
                 seconds: float | None = None, max_entries: int = 10_000) -> None:
        if (seconds is not None and seconds < 0) or max_entries < 1:
            raise ValueError("a token cache needs seconds >= 0 and max_entries >= 1")
        self.seconds = seconds
        self.max_entries = max_entries
        self._lookup = lookup
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._lookup is not None and self.seconds != 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Principal | None:
        """The principal of `token` if it verified before and still would (not expired, its
        key still the source's); None otherwise (verify it)."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._entries.get(digest)
        if entry is None:
            return None
        assert self._lookup is not None  # nothing enters without one
        if (self._clock() < entry.until and entry.principal.token == token
                and self._lookup(entry.kid) is entry.key):
            self._entries.move_to_end(digest)
            return entry.principal
        del self._entries[digest]
        return None

    def put(self, principal: Principal) -> None:
        """Remember a principal the verifier has just returned (call it before any await, so
        the key looked up is the one that verified it)."""
        if self._lookup is None or self.seconds == 0:
            return
        kid = _kid(principal.token)
        key = None if kid is None else self._lookup(kid)
        if kid is None or key is None:
            return
        until = float(principal.claims["exp"])
        if self.seconds is not None:
            until = min(until, self._clock() + self.seconds)
        digest = hashlib.sha256(principal.token.encode()).digest()
        self._entries[digest] = _Entry(principal, until, kid, key)
        self._entries.move_to_end(digest)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _kid(token: str) -> str | None:
    """The `kid` of a token's header (the verifier has read and checked it already)."""
    header = token.partition(".")[0]
    try:
        kid = json.loads(base64.urlsafe_b64decode(header + "==")).get("kid")
    except (ValueError, AttributeError):
        return None
    return kid if isinstance(kid, str) else None
