"""`saga_admin_router()`: list, show and retry saga instances over HTTP, for operators.

    GET  /sagas?status=needs_attention&type=ride&limit=50&offset=0   (sagas:read)
    GET  /sagas/{id}              state, data, last error and the step history   (sagas:read)
    POST /sagas/{id}/retry        a needs_attention saga compensates again      (sagas:write)

The orchestrator is the running service's (`runtime[SAGAS]`, see `saga_hook`).
"""

# No `from __future__ import annotations`: the routes are closures over a local alias, and
# FastAPI must see their annotations as objects, not as strings it resolves in module globals.

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from core.app import RuntimeDep
from core.bases import ConflictError, NotFoundError, error_responses
from core.db.limits import BIGINT
from core.saga.errors import SagaNotFoundError, SagaStateError
from core.saga.saga_orchestrator import SagaOrchestrator
from core.saga.store import SagaRecord, StepEntry
from core.saga.tables import STATUSES
from core.saga.wiring import SAGAS
from core.security import require_permission


class SagaSummary(BaseModel):
    id: str
    saga_type: str
    status: str
    step: int
    step_name: str | None
    attempts: int
    last_error: str | None
    deadline: datetime | None
    created_at: datetime
    updated_at: datetime


class SagaStepView(BaseModel):
    step: int
    step_name: str
    event: str
    status: str
    detail: str | None
    at: datetime


class SagaDetail(SagaSummary):
    data: dict[str, Any]
    correlation_id: str | None
    history: list[SagaStepView]


class SagaPage(BaseModel):
    data: list[SagaSummary]
    counts: dict[str, int]
    """Instances per status, over all types: `needs_attention` is the one to watch."""


def summary(orchestrator: SagaOrchestrator, record: SagaRecord) -> dict[str, Any]:
    definition = orchestrator.definitions.get(record.saga_type)
    name = (definition.steps[record.step].name
            if definition is not None and record.step < len(definition.steps) else None)
    return {"id": record.id, "saga_type": record.saga_type, "status": record.status,
            "step": record.step, "step_name": name, "attempts": record.attempts,
            "last_error": record.last_error, "deadline": record.deadline,
            "created_at": record.created_at, "updated_at": record.updated_at}


def detail(orchestrator: SagaOrchestrator, record: SagaRecord,
           history: list[StepEntry]) -> SagaDetail:
    return SagaDetail(**summary(orchestrator, record), data=record.data,
                      correlation_id=record.correlation_id,
                      history=[SagaStepView(step=h.step, step_name=h.step_name, event=h.event,
                                            status=h.status, detail=h.detail, at=h.at)
                               for h in history])


async def running_orchestrator(runtime: RuntimeDep) -> SagaOrchestrator:
    """The service's orchestrator, from its runtime (`saga_hook` put it there)."""
    return runtime[SAGAS]


def saga_admin_router(
    prefix: str = "/sagas", *, read: str = "sagas:read", write: str = "sagas:write",
    tags: list[str] | None = None,
    orchestrator: Callable[..., Awaitable[SagaOrchestrator]] = running_orchestrator,
) -> APIRouter:
    """The routes above under `prefix`, guarded by the `read` and `write` permissions;
    `orchestrator` is the dependency that finds the orchestrator (the runtime's)."""
    router = APIRouter(prefix=prefix, tags=list(tags or ["sagas"]))
    can_read = [Depends(require_permission(read))]
    Orchestrator = Annotated[SagaOrchestrator, Depends(orchestrator)]

    @router.get("", response_model=SagaPage, dependencies=can_read,
                responses=error_responses(401, 403, 422))
    async def list_sagas(
        orchestrator: Orchestrator,
        status: Annotated[str | None, Query(pattern=f"^(?:{'|'.join(STATUSES)})$")] = None,
        saga_type: Annotated[str | None, Query(alias="type", max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=BIGINT.high)] = 0,  # SQL's OFFSET is 64-bit
    ) -> SagaPage:
        records = await orchestrator.store.find(status=status, saga_type=saga_type,
                                                limit=limit, offset=offset)
        return SagaPage(data=[SagaSummary(**summary(orchestrator, r)) for r in records],
                        counts=await orchestrator.store.count())

    @router.get("/{saga_id}", response_model=SagaDetail, dependencies=can_read,
                responses=error_responses(401, 403, 404))
    async def show_saga(saga_id: str, orchestrator: Orchestrator) -> SagaDetail:
        try:
            record = await orchestrator.get(saga_id)
        except SagaNotFoundError as exc:
            raise NotFoundError(str(exc)) from exc
        return detail(orchestrator, record, await orchestrator.history(saga_id))

    @router.post("/{saga_id}/retry", response_model=SagaDetail,
                 dependencies=[Depends(require_permission(write))],
                 responses=error_responses(401, 403, 404, 409))
    async def retry_saga(saga_id: str, orchestrator: Orchestrator) -> SagaDetail:
        try:
            await orchestrator.retry(saga_id)
        except SagaNotFoundError as exc:
            raise NotFoundError(str(exc)) from exc
        except SagaStateError as exc:
            raise ConflictError(str(exc)) from exc
        return detail(orchestrator, await orchestrator.get(saga_id),
                      await orchestrator.history(saga_id))

    return router
