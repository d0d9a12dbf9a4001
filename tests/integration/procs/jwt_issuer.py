"""`python -m tests.integration.procs.jwt_issuer PORT`: a tiny issuer, the way the auth service
will publish keys, served by uvicorn. Keys live in `KEYS_DIR` (a FileKeyStore), so a restart
keeps them. It counts the JWKS and token requests it gets, for the tests to read.

    GET  /.well-known/jwks.json  the JWKS
    POST /oauth/token            client credentials (CLIENT_ID / CLIENT_SECRET; basic or form)
    POST /rotate?alg=ES256       a new signer               (test controls from here on)
    POST /issue                  a token for {"sub", "aud", "ttl", "permissions", ...}
    GET  /stats                  {"jwks": n, "token": n}
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.security import FileKeyStore, KeyManager, TokenIssuer

ISSUER = os.environ.get("ISSUER", "https://auth.test")
AUDIENCE = os.environ.get("AUDIENCE", "platform")
TOKEN_TTL = int(os.environ.get("TOKEN_TTL", "60"))
stats = {"jwks": 0, "token": 0}


@asynccontextmanager
async def lifespan(app: FastAPI) -> Any:
    keys = await KeyManager.open(FileKeyStore(os.environ["KEYS_DIR"]), max_token_ttl=3600)
    app.state.keys = keys
    app.state.issuer = TokenIssuer(keys, ISSUER)
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/.well-known/jwks.json")
async def jwks(request: Request) -> dict[str, Any]:
    stats["jwks"] += 1
    keys: KeyManager = request.app.state.keys
    return keys.jwks()


@app.get("/stats")
async def get_stats() -> dict[str, int]:
    return stats


@app.post("/rotate")
async def rotate(request: Request, alg: str | None = None) -> dict[str, str]:
    key = await request.app.state.keys.rotate(alg)
    return {"kid": key.kid}


@app.post("/issue")
async def issue(request: Request) -> dict[str, str]:
    body = await request.json()
    issuer: TokenIssuer = request.app.state.issuer
    token = issuer.issue(body["sub"], body.get("aud", AUDIENCE), body.get("ttl", TOKEN_TTL),
                         roles=body.get("roles", ()), permissions=body.get("permissions", ()),
                         kind=body.get("kind", "user"))
    return {"token": token}


@app.post("/oauth/token")
async def token(request: Request) -> JSONResponse:
    """Form parsing by hand: python-multipart is not a dependency of the project."""
    stats["token"] += 1
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
    grant_type, client_id = form.get("grant_type"), form.get("client_id")
    client_secret = form.get("client_secret")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            client_id, _, client_secret = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id = client_secret = None
    if grant_type != "client_credentials":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if (client_id, client_secret) != (os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"]):
        return JSONResponse({"error": "invalid_client", "error_description": "unknown client"},
                            status_code=401)
    issuer: TokenIssuer = request.app.state.issuer
    access = issuer.issue(client_id, AUDIENCE, TOKEN_TTL, kind="service",
                          permissions=["drivers:read"])
    return JSONResponse({"access_token": access, "token_type": "Bearer",
                         "expires_in": TOKEN_TTL})


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
