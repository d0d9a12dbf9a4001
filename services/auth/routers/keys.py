"""`GET /.well-known/jwks.json`: the public keys other services verify tokens with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from services.auth.deps import IssuerDep

router = APIRouter(tags=["keys"])


class Jwks(BaseModel):
    keys: list[dict[str, Any]]


@router.get("/.well-known/jwks.json", response_model=Jwks)
async def jwks(issuer: IssuerDep, response: Response) -> dict[str, Any]:
    """The signing key and the retiring ones (public parts only). Verifiers cache it; a
    short max-age lets a rotation reach them soon (they also refetch on an unknown kid)."""
    response.headers["Cache-Control"] = "public, max-age=60"
    return issuer.keys.jwks()
