"""A service's sagas, wired the way every part is: declared at import, built at start-up.

    # sagas.py of the orchestrating service
    handlers = HandlerRegistry(events)
    saga_replies(handlers, ride)                    # module-level reply handlers

    # main.py
    create_service(..., subscriptions=[Subscription(ride.reply_topic, handlers)],
                   hooks={SAGAS: saga_hook(Base.metadata, ride)})

    # a route or a handler
    await runtime[SAGAS].begin(session, ride, RideData(...))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import MetaData

from core.app import ServiceRuntime
from core.messaging import BaseEvent, HandlerRegistry, MessageContext
from core.runtime import RuntimeKey
from core.saga.saga_orchestrator import SagaOrchestrator
from core.saga.saga_step import SagaDefinition
from core.saga.tables import saga_tables

SAGAS = RuntimeKey("sagas", SagaOrchestrator)
"""The running service's orchestrator (`runtime[SAGAS]`, `ctx.runtime[SAGAS]`)."""


def saga_replies(handlers: HandlerRegistry, *definitions: SagaDefinition[Any]) -> None:
    """Register, on `handlers`, one handler per reply type of `definitions`, which hands the
    reply to the running orchestrator (`ctx.runtime[SAGAS]`) inside its inbox transaction."""

    async def on_reply(event: BaseEvent[Any], ctx: MessageContext) -> None:
        await ctx.runtime[SAGAS].handle_reply(event, ctx)

    seen: set[tuple[str, int]] = set()
    for definition in definitions:
        for kind in definition.reply_types():
            if (kind.EVENT_TYPE, kind.EVENT_VERSION) in seen:
                continue
            seen.add((kind.EVENT_TYPE, kind.EVENT_VERSION))
            handlers.add(kind, on_reply,
                         name=f"core.saga.reply:{kind.EVENT_TYPE}:v{kind.EVENT_VERSION}")


def saga_hook(metadata: MetaData, *definitions: SagaDefinition[Any], **options: Any
              ) -> Callable[[ServiceRuntime], AbstractAsyncContextManager[SagaOrchestrator]]:
    """A `create_service` hook building the orchestrator of `definitions` on the service's
    database and outbox (`metadata` must declare `saga_tables`), and running its sweeper
    while the service runs. `options` go to `SagaOrchestrator`."""

    @asynccontextmanager
    async def hook(runtime: ServiceRuntime) -> AsyncIterator[SagaOrchestrator]:
        orchestrator = SagaOrchestrator(runtime.database, runtime.outbox,
                                        saga_tables(metadata), definitions, **options)
        await orchestrator.start()
        try:
            yield orchestrator
        finally:
            await orchestrator.stop()

    return hook
