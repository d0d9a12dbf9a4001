"""`/ops`: a small operations API every service with token checking gets, for the gateway's
operations console (docs/console.md): its parked outbox rows (list, requeue, discard), the
same operations as `python -m core outbox`, on the service's own database, so nothing outside
the service opens that database: the console calls these routes through the gateway's service
client with the operator's token, and the service checks the token and its permission
(`OPS_PERMISSION`, the admins') itself. Sagas have their own such API already
(`core.saga.saga_admin_router`, which the order service mounts at `/sagas`).

Not in the OpenAPI document: it is an operators' interface, not part of the service's API,
and the gateway routes no public path to it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, Field
from sqlalchemy import MetaData

from core.bases.deps import DatabaseDep
from core.messaging.outbox import store as outbox_store
from core.security import require_permission

OPS_PERMISSION = "rbac:manage"
"""The admins' permission (auth's admin role holds it)."""


class Ids(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=1000)


class Count(BaseModel):
    count: int


def ops_routes(metadata: MetaData) -> APIRouter:
    """The `/ops` routes for a service whose tables are declared in `metadata`."""
    router = APIRouter(prefix="/ops", include_in_schema=False,
                       dependencies=[Depends(require_permission(OPS_PERMISSION))])

    @router.get("/outbox/parked")
    async def parked(db: DatabaseDep) -> list[outbox_store.ParkedEvent]:
        return await outbox_store.parked(db, metadata)

    @router.post("/outbox/requeue")
    async def requeue(db: DatabaseDep,
                      body: Annotated[Ids, Body()]) -> Count:
        return Count(count=await outbox_store.requeue(db, metadata, body.ids))

    @router.post("/outbox/discard")
    async def discard(db: DatabaseDep,
                      body: Annotated[Ids, Body()]) -> Count:
        return Count(count=await outbox_store.discard(db, metadata, body.ids))

    return router
