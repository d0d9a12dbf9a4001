"""Pages: Jinja2 with autoescape on for every template (each value rendered is escaped: a
dead letter's headers are whatever a producer wrote), and the headers every console answer
carries: a strict Content-Security-Policy (scripts, styles and requests from this origin
only; no inline script or style, so htmx is configured by a meta tag), no framing, no caching,
no referrer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    html = templates.get_template(name).render(root=root, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
