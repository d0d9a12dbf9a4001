"""The console's routes under `/console`: login and logout, dead letters (list, replay), the
services and their health, topics and lag, breakers and rate limits, and the static files.

Every route but login and the static files asks `Console.operator` first (no session: the
login page; no permission: 403), and every POST checks the session's CSRF token after that.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from core.http import ServiceClient
from core.security import KeysUnavailableError, TokenRejectedError, TokenVerifier
from gateway.client_address import TrustedProxies, client_ip, forwarded_headers
from gateway.config import GatewaySettings
from gateway.console import session
from gateway.console.kafka import ConsoleKafka
from gateway.console.rendering import HERE, SECURITY_HEADERS, render
from gateway.console.services_ops import ServiceOps, saga_path
from gateway.console.session import PREFIX, ForbiddenError, NotLoggedInError, Operator
from gateway.console.status import EdgeStatus
from gateway.routes import RouteTable

STATIC = {  # file -> media type: the only files served, no path from the request reaches disk
    "htmx/htmx.min.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",  # else the browser asks for /favicon.ico: a 404
}
TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # what Kafka allows in a topic name


@dataclass
class Console:
    """What the pages read: the gateway's own parts, passed in by `create_app`."""

    settings: GatewaySettings
    verifier: TokenVerifier | None
    client: ServiceClient
    table: Callable[[], RouteTable]
    kafka: ConsoleKafka
    edge: EdgeStatus
    ops: ServiceOps

    trusted: TrustedProxies = field(init=False)
    """Whose X-Forwarded-For and -Proto are believed (the edge's own setting)."""

    def __post_init__(self) -> None:
        self.trusted = TrustedProxies(self.settings.gateway_trusted_proxies)

    async def operator(self, request: Request) -> Operator:
        if self.verifier is None:  # no JWKS_URL: nobody can be checked, so nobody gets in
            raise ForbiddenError("the gateway verifies no tokens (JWKS_URL is not set)")
        return await session.operator(request, self.verifier,
                                      self.settings.gateway_console_permission)

    async def acting(self, request: Request) -> Operator:
        """The operator of a POST, whose CSRF token must match their session's."""
        who = await self.operator(request)
        await session.check_csrf(request, who.csrf)
        return who


def install(app: FastAPI, console: Console) -> None:
    """The console's routes and its refusals (login page, 403 page) on the gateway's app."""
    app.include_router(console_routes(console))

    async def not_logged_in(request: Request, _: Exception) -> Response:
        login = f"{request.scope.get('root_path', '')}{PREFIX}/login"
        if request.headers.get("hx-request"):  # htmx: send the whole page to the login form
            return Response(status_code=204, headers={"HX-Redirect": login, **SECURITY_HEADERS})
        return RedirectResponse(login, status_code=303, headers=SECURITY_HEADERS)

    async def forbidden(request: Request, exc: Exception) -> Response:
        return render(request, "forbidden.html", status=403, reason=str(exc), operator=None)

    async def keys_away(request: Request, exc: Exception) -> Response:
        return render(request, "forbidden.html", status=503, operator=None,
                      reason=f"tokens cannot be checked now: {exc}")

    app.add_exception_handler(NotLoggedInError, not_logged_in)
    app.add_exception_handler(ForbiddenError, forbidden)
    app.add_exception_handler(KeysUnavailableError, keys_away)


def console_routes(console: Console) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("")
    async def home(request: Request) -> Response:
        await console.operator(request)
        return RedirectResponse(f"{request.scope.get('root_path', '')}{PREFIX}/dead-letters",
                                status_code=303, headers=SECURITY_HEADERS)

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        return _login_form(console, request)

    @router.post("/login")
    async def login(request: Request, email: Annotated[str, Form(max_length=320)],
                    password: Annotated[str, Form(max_length=1024)],
                    csrf_token: Annotated[str, Form(max_length=100)] = "") -> Response:
        expected = request.cookies.get(session.LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(csrf_token, expected):
            raise ForbiddenError("the login form expired: reload it")
        token, error = await _log_in(console, request, email, password)
        if token is None:
            return _login_form(console, request, error=error, email=email, status=401)
        assert console.verifier is not None  # _log_in refused otherwise
        try:
            principal = await console.verifier.verify(token)
        except TokenRejectedError as exc:
            return _login_form(console, request, error=f"the token auth issued was refused: {exc}",
                               email=email, status=401)
        permission = console.settings.gateway_console_permission
        if not principal.has_permission(permission):
            return _login_form(console, request, email=email, status=403,
                               error=f"this account lacks the {permission} permission")
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}{PREFIX}", status_code=303,
                                    headers=SECURITY_HEADERS)
        response.set_cookie(session.TOKEN_COOKIE, token, max_age=_lifetime(principal.claims),
                            path=f"{root}{PREFIX}", secure=session.secure(request, console.trusted),
                            httponly=True, samesite="strict")
        response.delete_cookie(session.LOGIN_COOKIE, path=f"{root}{PREFIX}/login")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        await console.acting(request)
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}{PREFIX}/login", status_code=303,
                                    headers=SECURITY_HEADERS)
        response.delete_cookie(session.TOKEN_COOKIE, path=f"{root}{PREFIX}",
                               secure=session.secure(request, console.trusted), httponly=True,
                               samesite="strict")
        return response

    @router.get("/dead-letters")
    async def dead_letters(request: Request) -> Response:
        who = await console.operator(request)
        topics, error = await _safely(console.kafka.dlq_topics())
        return render(request, "dead_letters.html", operator=who, page="dead-letters",
                      topics=topics or {}, error=error)

    @router.get("/dead-letters/{topic}")
    async def topic_letters(request: Request, topic: str) -> Response:
        who = await console.operator(request)
        _check_topic(topic)
        letters, error = await _safely(console.kafka.letters(topic))
        return render(request, "topic_letters.html", operator=who, page="dead-letters",
                      topic=topic, letters=letters or [], error=error)

    @router.post("/dead-letters/{topic}/replay")
    async def replay(request: Request, topic: str, partition: Annotated[int, Form(ge=0)],
                     offset: Annotated[int, Form(ge=0)]) -> Response:
        who = await console.acting(request)
        _check_topic(topic)
        letter = await console.kafka.replay(topic, partition, offset,
                                            by=who.principal.subject, by_name=who.name)
        if letter is None:
            return render(request, "replayed.html", status=404, topic=topic,
                          partition=partition, offset=offset, by=None)
        return render(request, "replayed.html", topic=topic, partition=partition,
                      offset=offset, by=who.name)

    @router.get("/services")
    async def services(request: Request) -> Response:
        who = await console.operator(request)
        found = await console.edge.services()
        return render(request, "services.html", operator=who, page="services",
                      services=found)

    @router.get("/topics")
    async def topics(request: Request) -> Response:
        who = await console.operator(request)
        found, error = await _safely(console.edge.topics())
        return render(request, "topics.html", operator=who, page="topics",
                      topics=found or [], error=error)

    @router.get("/edge")
    async def edge(request: Request) -> Response:
        who = await console.operator(request)
        return render(request, "edge.html", operator=who, page="edge",
                      breakers=console.edge.breakers(), limits=console.edge.limits())

    @router.get("/outbox")
    async def outbox(request: Request) -> Response:
        who = await console.operator(request)
        answers = await console.ops.each("/ops/outbox/parked", who.principal.token)
        return render(request, "outbox.html", operator=who, page="outbox", answers=answers)

    @router.post("/outbox/{service}/{action}")
    async def outbox_action(request: Request, service: str, action: str,
                            row: Annotated[int, Form(ge=1)]) -> Response:
        who = await console.acting(request)
        if action not in ("requeue", "discard") or not console.ops.known(service):
            raise ForbiddenError("no such service or action")
        answer = await console.ops.call("POST", service, f"/ops/outbox/{action}",
                                        who.principal.token, json={"ids": [row]})
        done = isinstance(answer.body, dict) and answer.body.get("count") == 1
        return render(request, "done.html", status=200 if done else 409,
                      message=f"{action.removesuffix('e')}ed by {who.name}" if done else
                      (answer.error or f"row {row} is no longer parked"), ok=done)

    @router.get("/sagas")
    async def sagas(request: Request, status: str = "needs_attention") -> Response:
        who = await console.operator(request)
        params = {"limit": 50, **({"status": status} if status != "all" else {})}
        answers = await console.ops.each("/sagas", who.principal.token, params)
        return render(request, "sagas.html", operator=who, page="sagas", showing=status,
                      answers={k: v for k, v in answers.items() if not v.missing})

    @router.get("/sagas/{service}/{saga_id}")
    async def saga(request: Request, service: str, saga_id: str) -> Response:
        who = await console.operator(request)
        if not console.ops.known(service):
            raise ForbiddenError("no such service")
        answer = await console.ops.call("GET", service, saga_path(saga_id),
                                        who.principal.token)
        return render(request, "saga.html", operator=who, page="sagas", service=service,
                      saga_id=saga_id, answer=answer)

    @router.post("/sagas/{service}/{saga_id}/retry")
    async def saga_retry(request: Request, service: str, saga_id: str) -> Response:
        who = await console.acting(request)
        if not console.ops.known(service):
            raise ForbiddenError("no such service")
        answer = await console.ops.call("POST", service, saga_path(saga_id, "/retry"),
                                        who.principal.token)
        ok = answer.error is None
        return render(request, "done.html", status=200 if ok else 409, ok=ok,
                      message=f"retried by {who.name}: compensating again" if ok
                      else answer.error)

    for name, media_type in STATIC.items():
        router.add_api_route(f"/static/{name}", _static(name, media_type), methods=["GET"])
    return router


def _login_form(console: Console, request: Request, *, error: str | None = None,
                email: str = "", status: int = 200) -> Response:
    token = session.new_login_token()
    response = render(request, "login.html", status=status, error=error, email=email,
                      csrf=token, operator=None)
    response.set_cookie(session.LOGIN_COOKIE, token, max_age=3600,
                        path=f"{request.scope.get('root_path', '')}{PREFIX}/login",
                        secure=session.secure(request, console.trusted), httponly=True,
                        samesite="strict")
    return response


async def _log_in(console: Console, request: Request, email: str,
                  password: str) -> tuple[str | None, str]:
    """The access token auth issues for these credentials, through the route the gateway
    serves login on (`GATEWAY_CONSOLE_LOGIN_PATH`), or None and why not."""
    path = console.settings.gateway_console_login_path
    route = console.table().match(path)
    if route is None or console.verifier is None:
        return None, f"no route serves {path}, or nothing verifies tokens: ask an operator"
    # who the client is, as the edge tells any upstream: auth throttles failed logins by it
    ip = client_ip(request.scope, console.trusted)
    forwarded = {k.decode(): v.decode("latin-1")
                 for k, v in forwarded_headers(request.scope, ip)}
    try:
        answer = await console.client.post(
            route.service, route.upstream_path(path), json={"email": email, "password": password},
            headers=forwarded, timeout=route.timeout)
    except Exception as exc:  # the upstream away, its breaker open: say so, stay up
        return None, f"the auth service did not answer ({type(exc).__name__})"
    if answer.status_code == 200:
        token = answer.json().get("access_token")
        return (token, "") if isinstance(token, str) else (None, "auth sent no token")
    if answer.status_code in (400, 401, 422):
        return None, "wrong email or password"
    if answer.status_code == 429:
        return None, "too many attempts: wait a minute"
    return None, f"the auth service answered {answer.status_code}"


def _lifetime(claims: Any) -> int:
    """Seconds until the token expires: the cookie goes with it."""
    exp = claims.get("exp") if hasattr(claims, "get") else None
    return max(0, int(exp - time.time())) if isinstance(exp, int | float) else 900


def _check_topic(topic: str) -> None:
    if not TOPIC.match(topic):
        raise ForbiddenError("not a topic name")


async def _safely(call: Awaitable[Any]) -> tuple[Any, str | None]:
    """A page still renders when Kafka is away, with the reason in place of the table."""
    try:
        return await call, None
    except Exception as exc:
        return None, f"Kafka did not answer: {type(exc).__name__}: {exc}"


def _static(name: str, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
    path = HERE / "static" / name

    async def static() -> FileResponse:
        return FileResponse(path, media_type=media_type,
                            headers={"Cache-Control": "public, max-age=3600",
                                     "X-Content-Type-Options": "nosniff"})

    static.__name__ = "console_" + re.sub(r"\W", "_", name)
    return static
