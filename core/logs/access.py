"""`RequestLogMiddleware`: lines logged while a request is served name it (method, path, the
route template once routed; uvicorn's access line adds the status).

A plain ASGI middleware (no task, no body copy); it binds the scope itself, which the router
fills in with the matched route, so the template is read when a line is written."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from core.logs.context import bind_request, unbind_request


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = bind_request(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            unbind_request(token)
