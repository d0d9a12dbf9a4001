"""`/docs` at a service (built by `create_service`) and at the gateway loads nothing from
outside the app: every URL the page references is the app's own, and answers with its
content type. FastAPI's own page (CDN) is the broken input the check must catch."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.types import ASGIApp

from core.http.docs import ASSETS, SWAGGER_UI_DIR
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.fixed_registry import FixedRegistry
from tests.sample_service.app import service

URL = re.compile(r"""(?:href|src)=["']([^"']+)["']|url:\s*'([^']+)'""")
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png",
         ".json": "application/json"}


def referenced(html: str) -> list[str]:
    return [a or b for a, b in URL.findall(html)]


def external(html: str) -> list[str]:
    """Absolute URLs (another origin) anywhere in the page, CDNs named or not."""
    return re.findall(r"(?:https?:)?//[^\s\"'<>]+", html)


def test_the_check_catches_fastapis_cdn_page() -> None:
    page = bytes(get_swagger_ui_html(openapi_url="/openapi.json", title="t").body).decode()
    assert any("cdn.jsdelivr.net" in url for url in external(page))
    assert len(referenced(page)) == 4  # css, favicon, js, the document


def gateway() -> ASGIApp:
    return create_app(GatewaySettings(_env_file=None, legacy_upstream_url=None,
                                      jwks_url="http://127.0.0.1:9/.well-known/jwks.json"),
                      registry=FixedRegistry({}))


@pytest.mark.parametrize("app", [service, gateway], ids=["service", "gateway"])
async def test_docs_and_their_assets_are_served_by_the_app(app: Callable[[], ASGIApp]) -> None:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert external(page.text) == [], external(page.text)
        assert "jsdelivr" not in page.text and "unpkg" not in page.text
        urls = referenced(page.text)
        assert {url.rsplit(".", 1)[-1] for url in urls} == {"css", "png", "js", "json"}
        for url in urls:
            answer = await client.get(url)  # no token: as public as /docs itself
            assert answer.status_code == 200, (url, answer.text[:200])
            kind = TYPES["." + url.rsplit(".", 1)[-1]]
            assert answer.headers["content-type"].startswith(kind), url
            assert len(answer.content) > 100, url
        assert (await client.get("/docs/oauth2-redirect")).status_code == 200
        assert (await client.get("/redoc")).status_code == 404  # CDN-only: not offered
        assert (await client.get("/docs/assets/LICENSE")).status_code == 404  # listed only


def test_the_vendored_copy_is_one_release_and_only_what_the_page_loads() -> None:
    """VERSION says which swagger-ui-dist the files are (scripts/vendor-swagger-ui.sh), and the
    directory holds the served assets, licences and notes, no source maps or other bundles."""
    version = (SWAGGER_UI_DIR / "VERSION").read_text().strip()
    bundle = (SWAGGER_UI_DIR / "swagger-ui-bundle.js").read_text()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert f'PACKAGE_VERSION:"{version}"' in bundle
    assert {p.name for p in SWAGGER_UI_DIR.iterdir()} == {
        *ASSETS, "LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt", "README.md", "VERSION"}
