"""`python -m services.driver.tests.procs.user_standin PORT`: the user service as onboarding
sees it.

`GET /users/{user_id}` answers 200 for the profiles added with `POST /_profiles/{user_id}`,
404 for others, and remembers the Authorization header it got (`GET /_seen`).
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()
profiles: set[str] = set()
seen: list[dict[str, Any]] = []


@app.get("/users/{user_id}")
async def get_user(user_id: str, request: Request) -> JSONResponse:
    seen.append({"user_id": user_id, "authorization": request.headers.get("authorization")})
    if user_id not in profiles:
        return JSONResponse({"error": {"code": "not_found"}}, status_code=404)
    return JSONResponse({"id": user_id, "display_name": "Stand-in"})


@app.post("/_profiles/{user_id}")
async def add_profile(user_id: str) -> dict[str, str]:
    profiles.add(user_id)
    return {"id": user_id}


@app.get("/_seen")
async def get_seen() -> list[dict[str, Any]]:
    return seen


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
