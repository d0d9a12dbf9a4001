"""The service client's pure decisions: which instance, whether and when to retry, the budget;
and the request context: which ids are kept, what the middleware echoes and binds."""

from __future__ import annotations

import email.utils
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from core import correlation
from core.bases.errors import install_exception_handlers
from core.http import context
from core.http.auth import CallerOrService, ForwardCaller, NoAuth, ServiceToken
from core.http.balancer import LeastOutstanding
from core.http.context import RequestContext, bound, install_request_context, sane_id
from core.http.errors import (
    UpstreamBadResponseError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from core.http.retries import (
    IDEMPOTENT_METHODS,
    RETRY_STATUSES,
    RetryBudget,
    may_retry,
    parse_retry_after,
    retry_delay,
)
from core.resilience import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


# --- balancer -------------------------------------------------------------------------------


def test_idle_instances_take_turns() -> None:
    balancer = LeastOutstanding()
    picks = [balancer.pick("abc", str) for _ in range(6)]
    assert picks == ["b", "c", "a", "b", "c", "a"]


def test_the_least_loaded_instance_is_picked() -> None:
    balancer = LeastOutstanding()
    balancer.started("a")
    balancer.started("a")
    balancer.started("b")
    assert [balancer.pick("abc", str) for _ in range(3)] == ["c", "c", "c"]
    balancer.started("c")
    balancer.started("c")
    assert [balancer.pick("abc", str) for _ in range(3)] == ["b", "b", "b"]
    assert (balancer.in_flight("a"), balancer.in_flight("b"), balancer.in_flight("z")) == (
        2, 1, 0)


def test_finished_calls_are_forgotten_so_the_map_stays_small() -> None:
    balancer = LeastOutstanding()
    balancer.started("a")
    balancer.started("a")
    balancer.finished("a")
    assert balancer.in_flight("a") == 1 and len(balancer) == 1
    balancer.finished("a")
    assert balancer.in_flight("a") == 0 and len(balancer) == 0
    balancer.finished("a")  # an extra finish does not go negative
    assert balancer.in_flight("a") == 0 and len(balancer) == 0


def test_the_first_of_equals_after_a_loaded_one_is_the_next_in_turn() -> None:
    balancer = LeastOutstanding()
    balancer.started("b")
    assert balancer.pick("abc", str) == "c"  # turn 1 starts at b, which is busier
    assert balancer.pick("abc", str) == "c"  # turn 2 starts at c
    assert balancer.pick("abc", str) == "a"  # turn 3 starts at a


def test_a_single_candidate_and_none() -> None:
    balancer = LeastOutstanding()
    balancer.started("a")
    assert balancer.pick(["a"], str) == "a"
    with pytest.raises(ValueError, match=r"^no candidates to pick from$"):
        balancer.pick([], str)


# --- retry decisions ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "get", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])
def test_idempotent_methods_may_be_retried(method: str) -> None:
    assert may_retry(method, None)


@pytest.mark.parametrize("method", ["POST", "PATCH", "post"])
def test_other_methods_only_with_an_idempotency_key(method: str) -> None:
    assert not may_retry(method, None)
    assert not may_retry(method, "")
    assert may_retry(method, "order-42")


def test_what_is_retried() -> None:
    assert frozenset({502, 503, 504}) == RETRY_STATUSES
    assert "POST" not in IDEMPOTENT_METHODS and "PATCH" not in IDEMPOTENT_METHODS


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after("1.5") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00") is None  # no zone: not a GMT date


def test_retry_after_date_against_the_real_clock() -> None:
    import time

    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < (parse_retry_after(in_a_minute) or 0) <= 60


def test_retry_delay_backs_off_and_stops() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.1, max_delay=1.0, jitter=False)
    assert retry_delay(policy, 1, None, remaining=10) == 0.1
    assert retry_delay(policy, 2, None, remaining=10) == 0.2
    assert retry_delay(policy, 3, None, remaining=10) is None  # attempts used up


def test_retry_delay_honours_retry_after_within_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0.1, jitter=False)
    assert retry_delay(policy, 1, 2.0, remaining=10) == 2.0
    assert retry_delay(policy, 1, 0.01, remaining=10) == 0.1  # the backoff is longer
    assert retry_delay(policy, 1, 10.0, remaining=10) is None  # would end past the deadline
    assert retry_delay(policy, 1, 9.9, remaining=10) == 9.9
    assert retry_delay(policy, 1, None, remaining=0.1) is None
    assert retry_delay(policy, 1, None, remaining=0.1001) == 0.1


def test_the_budget_allows_a_share_of_the_calls() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, min_retries=0, window=10, slices=10, clock=clock)
    for _ in range(10):
        budget.record_call()
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()  # 2 of 10 spent
    assert budget.totals() == (10, 2)
    for _ in range(5):
        budget.record_call()
    assert budget.try_spend()  # 15 calls: 3 retries
    assert not budget.try_spend()


def test_the_budget_has_a_floor_for_quiet_callers() -> None:
    budget = RetryBudget(0.0, min_retries=2, clock=Clock())
    budget.record_call()
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()


def test_the_budget_refills_as_the_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(0.5, min_retries=0, window=10, slices=10, clock=clock)
    budget.record_call()
    budget.record_call()
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.now += 9.0
    assert not budget.try_spend()  # still within the window
    clock.now += 1.0
    assert budget.totals() == (0, 0)
    budget.record_call()
    budget.record_call()
    assert budget.try_spend()
    clock.now += 10.0  # the same slot of the ring, one lap later
    budget.record_call()
    assert budget.totals() == (1, 0)


def test_the_budget_defaults_and_refuses_nonsense() -> None:
    budget = RetryBudget(clock=Clock())
    assert (budget.ratio, budget.min_retries) == (0.2, 10)
    for _ in range(10):
        assert budget.try_spend()
    assert not budget.try_spend()
    with pytest.raises(ValueError, match=r"^ratio and min_retries must be >= 0$"):
        RetryBudget(-0.1)
    with pytest.raises(ValueError, match=r"^ratio and min_retries must be >= 0$"):
        RetryBudget(min_retries=-1)
    with pytest.raises(ValueError, match=r"^window must be > 0 and slices >= 1$"):
        RetryBudget(window=0)
    with pytest.raises(ValueError, match=r"^window must be > 0 and slices >= 1$"):
        RetryBudget(slices=0)
    RetryBudget(0, min_retries=0, slices=1, window=0.5)


def test_the_default_budget_window_is_ten_one_second_slices() -> None:
    clock = Clock()
    budget = RetryBudget(clock=clock)
    clock.now = 500.95
    budget.record_call()
    clock.now = 509.99
    assert budget.totals() == (1, 0)
    clock.now = 510.05  # the slice [500, 501) has left the window
    assert budget.totals() == (0, 0)


# --- request context ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "a" * 128, "req-1_2.3:4+5=6@7/8", "0"])
def test_sane_ids_are_kept(value: str) -> None:
    assert sane_id(value) == value


@pytest.mark.parametrize("value", [None, "", "a" * 129, "two words", "x\r\nSet-Cookie: a",
                                   "<script>", "ünïcode", "a;b"])
def test_other_ids_are_refused(value: str | None) -> None:
    assert sane_id(value) is None


def echo_app() -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/ctx")
    async def ctx(request: Request) -> dict[str, Any]:
        current, ids = context.current(), correlation.current()
        assert current is not None and ids is not None
        return {"request_id": current.request_id, "correlation_id": ids.correlation_id,
                "causation_id": ids.causation_id, "authorization": current.authorization}

    @app.get("/down")
    async def down() -> None:
        raise UpstreamUnavailableError("users", "connect to http://10.0.0.7:8000 refused",
                                       retry_after=2.2)

    @app.get("/preset")
    async def preset() -> Any:
        from fastapi.responses import JSONResponse
        return JSONResponse({}, headers={"X-Request-ID": "from-the-route"})

    install_request_context(app)
    return app


def served(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a")


async def test_the_middleware_keeps_sane_ids_echoes_and_binds_them() -> None:
    async with served(echo_app()) as http:
        answer = await http.get("/ctx", headers={"X-Request-ID": "r-1", "X-Correlation-ID": "c-1",
                                           "Authorization": "Bearer t"})
        assert answer.json() == {"request_id": "r-1", "correlation_id": "c-1",
                                 "causation_id": None, "authorization": "Bearer t"}
        assert answer.headers["x-request-id"] == "r-1"
        assert answer.headers["x-correlation-id"] == "c-1"


async def test_the_middleware_makes_ids_for_missing_or_unsafe_ones() -> None:
    async with served(echo_app()) as http:
        made = (await http.get("/ctx")).json()
        assert len(made["request_id"]) == 32 and made["correlation_id"] == made["request_id"]
        assert made["authorization"] is None
        other = (await http.get("/ctx")).json()
        assert other["request_id"] != made["request_id"]
        unsafe = await http.get("/ctx", headers={"X-Request-ID": "a b",
                                           "X-Correlation-ID": "c-2"})
        assert unsafe.json()["request_id"] != "a b"
        assert unsafe.json()["correlation_id"] == "c-2"
        assert context.current() is None  # nothing leaks out of the request
        assert correlation.current() is None


async def test_the_middleware_replaces_ids_the_route_set_and_is_on_error_answers() -> None:
    async with served(echo_app()) as http:
        preset = await http.get("/preset", headers={"X-Request-ID": "r-9"})
        assert preset.headers.get_list("x-request-id") == ["r-9"]
        down = await http.get("/down", headers={"X-Request-ID": "r-10"})
        assert down.status_code == 503
        assert down.headers["x-request-id"] == "r-10"
        assert down.headers["retry-after"] == "3"
        assert down.json() == {"error": {"code": "upstream_unavailable",
                                         "message": "Service 'users' is unavailable",
                                         "fields": []}}


async def test_the_middleware_passes_lifespan_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await context.RequestContextMiddleware(app)({"type": "lifespan"}, None, None)
    assert seen == ["lifespan"]
    with pytest.raises(TypeError, match="Starlette or FastAPI"):
        install_request_context(app)


def test_the_context_repr_hides_the_token() -> None:
    assert "secret" not in repr(RequestContext("r", "Bearer secret"))


# --- identity -------------------------------------------------------------------------------


async def test_identities() -> None:
    async def token() -> str:
        return "svc-token"

    assert await NoAuth().authorization() is None
    assert await ForwardCaller().authorization() is None
    assert await ServiceToken(token).authorization() == "Bearer svc-token"
    assert await CallerOrService(token).authorization() == "Bearer svc-token"
    with bound(RequestContext("r", "Bearer user")):
        assert await ForwardCaller().authorization() == "Bearer user"
        assert await CallerOrService(token).authorization() == "Bearer user"
        assert await ServiceToken(token).authorization() == "Bearer svc-token"
    with bound(RequestContext("r", None)):
        assert await CallerOrService(token).authorization() == "Bearer svc-token"


# --- errors ---------------------------------------------------------------------------------


def test_upstream_errors_say_the_service_and_keep_details_for_the_log() -> None:
    timeout = UpstreamTimeoutError("orders", "GET orders/x timed out after 5s")
    assert (timeout.status_code, timeout.code) == (504, "upstream_timeout")
    assert timeout.message == "Service 'orders' did not answer in time"
    assert str(timeout) == "Service 'orders' did not answer in time: GET orders/x timed out " \
                           "after 5s"
    assert timeout.headers == {}
    error = UpstreamBadResponseError("orders", status=500)
    assert (error.status_code, error.code, error.status) == (502, "upstream_error", 500)
    assert str(error) == "Service 'orders' answered with an error"
    assert UpstreamUnavailableError("orders", retry_after=0).headers == {"Retry-After": "0"}
    assert UpstreamUnavailableError("orders").expose
