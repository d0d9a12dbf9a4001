"""Swagger UI served from the package: `/docs` with its assets under `/docs/assets/`.

FastAPI's own `/docs` loads Swagger UI's JavaScript and CSS from a CDN, so offline (or behind
a strict proxy) the page is blank. These routes serve the vendored copy
(`static/swagger-ui/`, see its README) instead; ReDoc, CDN-only, is not offered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

SWAGGER_UI_DIR = Path(__file__).parent / "static" / "swagger-ui"
ASSETS = {  # file -> media type: the only files served, so no path ever reaches the disk
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
CACHE = "public, max-age=86400"


def swagger_ui_paths(docs_url: str = "/docs") -> frozenset[str]:
    """Every path `swagger_ui_routes` serves (the gateway answers exactly these itself)."""
    return frozenset({docs_url, f"{docs_url}/oauth2-redirect",
                      *(f"{docs_url}/assets/{name}" for name in ASSETS)})


def swagger_ui_routes(*, title: str, openapi_url: str = "/openapi.json",
                docs_url: str = "/docs") -> APIRouter:
    """`GET docs_url` (Swagger UI reading `openapi_url`), its OAuth2 redirect page and its
    assets, none of them in the OpenAPI document. URLs are prefixed with the request's
    `root_path`, as FastAPI's own `/docs` does, so the page works behind a path prefix."""
    router = APIRouter()
    assets = f"{docs_url}/assets"

    @router.get(docs_url, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=title,
            oauth2_redirect_url=f"{root}{docs_url}/oauth2-redirect",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon-32x32.png")

    @router.get(f"{docs_url}/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    for name, media_type in ASSETS.items():
        router.add_api_route(f"{assets}/{name}", _asset(name, media_type),
                             include_in_schema=False, methods=["GET"])
    return router


def _asset(name: str, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
    path = SWAGGER_UI_DIR / name

    async def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": CACHE})

    asset.__name__ = f"swagger_ui_{name.replace('-', '_').replace('.', '_')}"
    return asset
