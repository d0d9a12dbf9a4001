"""Slowing down and locking repeated failed logins, per account and per client.

`LoginThrottle` decides (with `policy`); a `FailureStore` keeps the counts: in Redis when
`REDIS_URL` is set (shared by every instance, expiring by itself), else in the service's own
database. Both honour one contract (tests/test_throttle_contract.py).
"""

from services.auth.throttle.base import (
    THROTTLE,
    FailureStore,
    LoginThrottle,
    ThrottledError,
    ThrottleUnavailableError,
)
from services.auth.throttle.policy import FailureState, ThrottlePolicy, retry_after

__all__ = [
           "THROTTLE",
           "FailureState",
           "FailureStore",
           "LoginThrottle",
           "ThrottlePolicy",
           "ThrottleUnavailableError",
           "ThrottledError",
           "retry_after",
]
