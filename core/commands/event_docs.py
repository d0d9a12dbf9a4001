"""The services' AsyncAPI documents, for `python -m core events docs`: each service's app is
built (`services.<name>.main.create_app`, which opens nothing) and asked for the document it
serves at `/asyncapi.json`, so the file and the services never disagree."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from core.asyncapi import merge_asyncapi
from core.commands.event_catalog import service_names
from core.security.types import VerificationKey
from core.security.verifier import TokenVerifier
from core.security.wiring import Security

Json = dict[str, Any]


class _NoKeys:
    """A key source for apps that serve no request: their routes need a verifier to be
    built (a service refuses to start without one), never a key."""

    async def get(self, kid: str) -> VerificationKey | None:
        return None


def documents(root: Path, package: str = "services") -> dict[str, Json]:
    """Service name -> its AsyncAPI document, for every service under `root`."""
    security = Security(TokenVerifier(_NoKeys(), issuer="events-docs", audience="events-docs"))
    out = {}
    for name in service_names(root):
        app = importlib.import_module(f"{package}.{name}.main").create_app(security=security)
        out[name] = app.state.asyncapi()
    return out


def merged(root: Path, *, title: str = "Events", version: str = "") -> Json:
    return merge_asyncapi(documents(root), title=title, version=version)
