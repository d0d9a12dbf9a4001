"""Guards for calls to other processes: retry with backoff, circuit breaker, bulkhead, timeout.

Each is small and stands alone; they compose by nesting (the service client in `core.http`
shows the order: bulkhead, then breaker, then timeout, inside a retry loop).
"""

from core.resilience.breaker import BreakerConfig, CircuitBreaker, Permit, State
from core.resilience.bulkhead import Bulkhead
from core.resilience.errors import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    ResilienceError,
)
from core.resilience.rate_limit import (
    Decision,
    FallbackRateLimiter,
    LocalRateLimiter,
    RateLimiter,
    RateLimitPolicy,
    rate_limiter,
)
from core.resilience.rate_limit_redis import RedisRateLimiter
from core.resilience.registry import KeyedRegistry
from core.resilience.retry import RetryPolicy
from core.resilience.timeout import run_with_timeout, timeout

__all__ = [
    "BreakerConfig",
    "Bulkhead",
    "BulkheadFullError",
    "CallTimeoutError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Decision",
    "FallbackRateLimiter",
    "KeyedRegistry",
    "LocalRateLimiter",
    "Permit",
    "RateLimitPolicy",
    "RateLimiter",
    "RedisRateLimiter",
    "ResilienceError",
    "RetryPolicy",
    "State",
    "rate_limiter",
    "run_with_timeout",
    "timeout",
]
