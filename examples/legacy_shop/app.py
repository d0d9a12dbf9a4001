"""The shop's app: every router on one FastAPI app over one database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from examples.legacy_shop import catalog, customers, orders
from examples.legacy_shop.db import open_database
from examples.legacy_shop.seed import seed

SERVED_BY = "legacy-shop"
"""The `X-Served-By` header on every answer: how the guide's test tells who answered a path
behind the gateway."""


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(title="legacy shop")
    app.state.sessions = open_database(database_url)
    seed(app.state.sessions)
    for module in (catalog, customers, orders):
        app.include_router(module.router)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.middleware("http")
    async def served_by(request: Request,
                        call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["X-Served-By"] = SERVED_BY
        return response

    return app
