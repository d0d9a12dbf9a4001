"""The user service's route dependencies, as `Annotated` aliases over the running service's
parts (the database, the outbox writer, its hook's profile cache)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from core.app import RuntimeDep
from core.bases import DatabaseDep
from services.user.cache import CACHE
from services.user.directory import Profiles


async def get_profiles(runtime: RuntimeDep, database: DatabaseDep) -> Profiles:
    """`async def` though it never awaits: FastAPI runs a plain `def` dependency in a
    thread."""
    return Profiles(database, runtime.outbox, runtime[CACHE])


ProfilesDep = Annotated[Profiles, Depends(get_profiles)]
"""Profile reads through the cache, writes that invalidate it (one request's)."""
