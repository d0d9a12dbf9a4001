"""The participant's side: handle a saga's command once, and answer through the outbox.

    @participant(handlers, ReserveDriver)
    async def reserve(command: ReserveDriver, ctx: MessageContext) -> BaseEvent[Any] | None:
        driver = await take_nearest(ctx.session, command.data.pickup)   # the inbox's session
        if driver is None:
            return command.caused(NoDriverAvailable, NoDriverData(reason="none nearby"))
        return command.caused(DriverReserved, DriverReservedData(driver_id=driver.id))

The handler runs through the inbox (once per command event), in the inbox's transaction
(`ctx.session`); its reply is added to the outbox in that same transaction, to the topic the
command names in `reply_to`, keyed and tagged with the saga's id, `in_reply_to` the command.
So the participant's effect, its inbox row and its reply commit together: a redelivered
command does nothing, and a crash leaves neither the effect nor the reply.

Return the failure reply for a refusal the saga should compensate; raise for a failure worth
retrying (the consumer retries, then dead-letters: the saga's step then times out). Return
None to answer nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.app import OUTBOX_WRITER
from core.messaging import BaseEvent, HandlerRegistry, MessageContext, PermanentHandlerError
from core.messaging.handlers import reply_classes
from core.messaging.types import HEADER_IN_REPLY_TO, HEADER_REPLY_TO
from core.saga.saga_orchestrator import H_SAGA_ID

C = TypeVar("C", bound=BaseEvent[Any])
Participant = Callable[[C, MessageContext], Awaitable[BaseEvent[Any] | None]]
P = TypeVar("P", bound=Callable[..., Awaitable[BaseEvent[Any] | None]])


async def reply(ctx: MessageContext, command: BaseEvent[Any], answer: BaseEvent[Any]) -> None:
    """Add `answer` to `command`'s saga through the outbox, in the handler's transaction.
    The running service's outbox writer comes from `ctx.runtime`."""
    if ctx.session is None:
        raise PermanentHandlerError(
            "a saga participant answers in its inbox transaction: register it with once=True "
            "on a consumer with a database idempotency store")
    reply_to = ctx.record.header(HEADER_REPLY_TO)
    saga_id = ctx.record.header(H_SAGA_ID)
    if not reply_to or not saga_id:
        raise PermanentHandlerError(
            f"{command.EVENT_TYPE} {command.event_id} names no saga_id or reply_to: not a "
            "saga command")
    if answer.causation_id is None:
        answer = answer.model_copy(update={"causation_id": str(command.event_id)})
    await ctx.runtime[OUTBOX_WRITER].add(ctx.session, reply_to, answer, key=saga_id, headers=[
        (H_SAGA_ID, saga_id.encode()),
        (HEADER_IN_REPLY_TO, str(command.event_id).encode()),
    ])


def participant(handlers: HandlerRegistry, command_cls: type[C], *,
                name: str | None = None) -> Callable[[P], P]:
    """Register the decorated `async def (command, ctx) -> reply | None` on `handlers` for
    `command_cls`, run once per command (the inbox) with its reply in the same transaction.
    Annotate the replies (`-> Reserved | NotReserved`): the AsyncAPI document lists them."""

    def decorator(fn: P) -> P:
        async def run(command: C, ctx: MessageContext) -> None:
            answer = await fn(command, ctx)
            if answer is not None:
                await reply(ctx, command, answer)

        handlers.add(command_cls, run, name=name or f"{fn.__module__}.{fn.__qualname__}")
        handlers.replies[command_cls] = reply_classes(fn)  # for the AsyncAPI document
        return fn

    return decorator
