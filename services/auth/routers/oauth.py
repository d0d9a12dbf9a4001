"""`POST /oauth/token`: OAuth2 client credentials (RFC 6749 §4.4) for service identities.

The client authenticates with HTTP Basic or with `client_id`/`client_secret` in the form
(not both). Errors are RFC 6749 §5.2 bodies (`{"error", "error_description"}`), not the
platform's error envelope: OAuth clients (core.security.service_identity) read these.
Failures count against the caller's address like failed logins.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from core.bases import SessionDep, error_responses
from services.auth.deps import ClientAddress, IssuerDep, SettingsDep, ThrottleDep
from services.auth.rules.clients import Clients
from services.auth.schemas import AccessToken, OAuthError

router = APIRouter(tags=["oauth"])
HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FormText = Annotated[str | None, Form(max_length=1000)]


def _error(status: int, error: str, description: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = OAuthError(error=error, error_description=description)
    return JSONResponse(body.model_dump(), status_code=status, headers={**HEADERS,
                                                                        **(headers or {})})


_OAUTH = {"model": OAuthError}


@router.post("/oauth/token", response_model=AccessToken, responses={
    400: {**_OAUTH, "description": "invalid_request, unsupported_grant_type, invalid_scope"},
    401: {**_OAUTH, "description": "invalid_client"},
    **error_responses(429, 503)})
async def token(
    request: Request, session: SessionDep, settings: SettingsDep, throttle: ThrottleDep,
    issuer: IssuerDep,
    address: ClientAddress, grant_type: FormText = None, client_id: FormText = None,
    client_secret: FormText = None, scope: FormText = None,
) -> Any:
    """A service token (`kind=service`, `sub` = the client id) with the client's permissions,
    or those of `scope` (space-separated), which must be among them."""
    if grant_type is None:
        return _error(400, "invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        return _error(400, "unsupported_grant_type", "only client_credentials is supported")
    basic = _basic(request.headers.get("authorization"))
    if basic is not None and (client_id is not None or client_secret is not None):
        return _error(400, "invalid_request", "use one client authentication method, not two")
    if basic is False:
        return _error(401, "invalid_client", "malformed Basic credentials",
                      {"WWW-Authenticate": 'Basic realm="auth"'})
    cid, secret = basic if basic is not None else (client_id, client_secret)
    if not cid or not secret:
        return _error(401, "invalid_client", "client authentication is required",
                      {"WWW-Authenticate": 'Basic realm="auth"'})
    await throttle.check(account=None, client=address)
    permissions = await Clients(session).authenticate(cid, secret)
    if permissions is None:
        await throttle.failed(account=None, client=address)
        challenge = {"WWW-Authenticate": 'Basic realm="auth"'} if basic else {}
        return _error(401, "invalid_client", "unknown client or wrong secret", challenge)
    if scope is not None:
        wanted = set(scope.split())
        if not wanted <= set(permissions):
            return _error(400, "invalid_scope", "scope asks for permissions the client lacks")
        permissions = sorted(wanted)
    access = issuer.issue(cid, settings.jwt_audience, settings.service_token_ttl,
                          kind="service", permissions=permissions)
    return JSONResponse(AccessToken(access_token=access, expires_in=settings.service_token_ttl)
                        .model_dump(), headers=HEADERS)


def _basic(header: str | None) -> tuple[str, str] | Literal[False] | None:
    """(id, secret) of `Authorization: Basic ...`; None without it; False when malformed.
    Not form-decoded: the platform's ids and secrets are URL-safe already (and
    core.security.service_identity sends them as is)."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret) if colon else False
