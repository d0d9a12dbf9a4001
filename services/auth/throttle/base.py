"""The port (`FailureStore`) and the one place that decides (`LoginThrottle`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from core.bases import AppError, TooManyRequestsError
from core.runtime import RuntimeKey
from services.auth.throttle.policy import (
    FailureState,
    ThrottlePolicy,
    retry_after,
    whole_seconds,
)


class FailureStore(Protocol):
    """Failure counts by key, shared by every instance that shares the store.

    `record` counts one failure at `now` atomically (concurrent failures of one key are all
    counted, none lost) and returns the new state, computed as `policy.after_failure` says;
    `load` returns the state, or None for a key with no failure that still matters; `reset`
    forgets a key (a successful login). Keys are opaque strings of at most 300 characters.
    Implementations raise ThrottleUnavailableError on I/O failure: a store that cannot answer
    fails the login (503),
    it never lets unlimited guesses through.
    """

    async def load(self, key: str, policy: ThrottlePolicy) -> FailureState | None: ...

    async def record(self, key: str, policy: ThrottlePolicy, now: float) -> FailureState: ...

    async def reset(self, key: str) -> None: ...

    async def close(self) -> None: ...


class ThrottleUnavailableError(AppError):
    """The failure counts cannot be read or written: logins wait rather than go unchecked."""

    status_code = 503
    code = "throttle_unavailable"
    default_message = "Login is unavailable for a moment; retry shortly"
    expose = True

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"})


class ThrottledError(TooManyRequestsError):
    """Too many failed logins for this account or client: wait `Retry-After` seconds."""

    code = "login_throttled"

    def __init__(self, seconds: float) -> None:
        wait = whole_seconds(seconds)
        super().__init__(f"Too many failed attempts; retry in {wait} s",
                         headers={"Retry-After": str(wait)})


class LoginThrottle:
    """Checks before a credential is even looked at, counts failures after.

    The check comes first so that a slowed or locked key gets the same answer whether the
    password was right or not, and costs no password hash. Two attempts racing past the check
    together are both verified: the throttle bounds guesses to about `lock_after` plus the
    concurrency of one attacker, not exactly `lock_after`.
    """

    def __init__(self, store: FailureStore, account: ThrottlePolicy, client: ThrottlePolicy,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policies = {"account": account, "client": client}
        self.clock = clock

    def _keys(self, account: str | None, client: str | None) -> Iterable[tuple[str,
                                                                            ThrottlePolicy]]:
        for kind, value in (("account", account), ("client", client)):
            if value:
                yield f"login:{kind}:{value}"[:300], self.policies[kind]

    async def check(self, *, account: str | None, client: str | None) -> None:
        """Raise ThrottledError when either key must wait."""
        now = self.clock()
        waits = [retry_after(await self.store.load(key, policy), policy, now)
                 for key, policy in self._keys(account, client)]
        if waits and max(waits) > 0:
            raise ThrottledError(max(waits))

    async def failed(self, *, account: str | None, client: str | None) -> None:
        now = self.clock()
        for key, policy in self._keys(account, client):
            await self.store.record(key, policy, now)

    async def succeeded(self, *, account: str) -> None:
        """A good password resets its account; the client's count stays (one attacker may
        own one account and guess at others)."""
        for key, _ in self._keys(account, None):
            await self.store.reset(key)

    async def close(self) -> None:
        await self.store.close()


THROTTLE = RuntimeKey("login_throttle", LoginThrottle)
"""The service's login throttle, over its failure store (Redis or the database)."""
