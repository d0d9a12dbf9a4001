"""`SagaOrchestrator`: starts sagas, moves them on replies and deadlines, and never loses one.

All state is in the service's database (`saga_tables`): an instance row and its history. Each
transition reads the row, decides (`transitions`, `compensation`), and writes in ONE
transaction the row (a conditional UPDATE on its version), the history and the outbox row of
the next command: no command is sent without its state, and no state is kept without its
command. Whoever loses a race on the version (a second orchestrator, the sweeper against a
reply) writes nothing and moves on.

- Commands carry the headers `saga_id`, `saga_step` and `reply_to` (the saga's reply topic);
  a participant answers (`core.saga.reply`) with `saga_id` and `in_reply_to`, the command's
  event id. A reply moves its saga only if that saga still awaits exactly that command: a
  duplicate, or a reply to a step the saga has left (timed out, cancelled), is logged and
  ignored.
- Deadlines are a column, swept by `periodically()` (every `sweep_interval`): a step whose
  reply is overdue is compensated, a compensation overdue is a failed attempt, a compensation
  whose backoff is over is sent again. Nothing waits in memory, so after a crash any instance
  picks every unfinished saga up where the database says it is.

Concurrency: safe for many tasks of one event loop, and for many processes on one database.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core import correlation
from core.db import Database, uuid7
from core.messaging import BaseEvent, MessageContext, OutboxWriter
from core.messaging.types import HEADER_IN_REPLY_TO, HEADER_REPLY_TO
from core.resilience import RetryPolicy
from core.saga.compensation import (
    COMPENSATION_RETRY,
    compensate_from,
    compensation_due,
    compensation_failed,
    compensation_succeeded,
    send_compensation,
)
from core.saga.errors import SagaNotFoundError, SagaStateError, UnknownSagaError
from core.saga.saga_step import SagaDefinition
from core.saga.store import Change, SagaRecord, SagaStore, StepEntry
from core.saga.tables import (
    COMPENSATING,
    COMPLETED,
    NEEDS_ATTENTION,
    RUNNING,
    SagaTables,
)
from core.saga.transitions import Decision, History, reason_of, send_step, step_succeeded
from core.tasks import cancel_and_wait, periodically
from core.tracing import kept_traceparent, resumed

log = logging.getLogger(__name__)

H_SAGA_ID = "saga_id"
"""On a command and its reply: the saga instance it belongs to."""
H_SAGA_STEP = "saga_step"
"""On a command: the step's name, with `:compensate` for its compensation (for people and
tools; replies are matched by `in_reply_to`)."""

CHANGE_ATTEMPTS = 5
"""Times an operator's action (cancel, retry) re-reads and tries again after losing a race."""


class SagaOrchestrator:
    """Runs the sagas of `definitions` on `db`, sending commands through `outbox`.

    `begin()` starts one in the caller's transaction; `handle_reply()` is what the reply
    handlers (`saga_replies`) call; `start()` runs the sweeper, `stop()` ends it. `counts`
    tallies outcomes and ignored replies since start (for metrics and tests).
    """

    def __init__(
        self,
        db: Database,
        outbox: OutboxWriter,
        tables: SagaTables,
        definitions: Sequence[SagaDefinition[Any]],
        *,
        compensation_retry: RetryPolicy = COMPENSATION_RETRY,
        sweep_interval: float = 1.0,
        sweep_batch: int = 200,
    ) -> None:
        self.store = SagaStore(db, tables)
        self.outbox = outbox
        self.definitions = {d.name: d for d in definitions}
        if len(self.definitions) != len(definitions):
            raise ValueError("two saga definitions share a name")
        self.compensation_retry = compensation_retry
        self.sweep_interval = sweep_interval
        self.sweep_batch = sweep_batch
        self.counts: Counter[str] = Counter()
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Sweep for due sagas now and every `sweep_interval` seconds: this is also how an
        instance resumes the sagas a crashed one left."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(periodically(
                self._sweep_all, self.sweep_interval, log=log, failed="saga sweep failed",
                report="streak", wake=self._wake), name="saga-sweeper")

    async def stop(self) -> None:
        task, self._sweeper = self._sweeper, None
        await cancel_and_wait(task)

    def wake(self) -> None:
        """Sweep now rather than at the next interval."""
        self._wake.set()

    # -- starting ----------------------------------------------------------------------------

    def definition(self, name: str) -> SagaDefinition[Any]:
        try:
            return self.definitions[name]
        except KeyError:
            raise UnknownSagaError(f"no saga definition named {name!r}") from None

    async def begin(self, session: AsyncSession, saga: SagaDefinition[Any] | str,
                    data: BaseModel, *, saga_id: str | None = None) -> str:
        """Start a saga in the caller's transaction: its row, its history and its first
        command commit with the caller's own writes (or none of them do). Returns its id."""
        definition = self.definition(saga if isinstance(saga, str) else saga.name)
        if not isinstance(data, definition.data):
            raise TypeError(f"saga {definition.name} takes {definition.data.__name__} data")
        saga_id = saga_id or str(uuid7())
        ids = correlation.current()
        correlation_id = ids.correlation_id if ids is not None else saga_id
        history: History = [(0, definition.steps[0].name, "started", RUNNING, None)]
        decision = send_step(definition, saga_id, correlation_id, data, 0, history)
        await self.store.insert(session, saga_id, definition.name, decision.change.data,
                                decision.change, correlation_id, kept_traceparent())
        await self._write(session, definition, saga_id, decision)
        self.counts["started"] += 1
        return saga_id

    # -- replies -----------------------------------------------------------------------------

    async def handle_reply(self, event: BaseEvent[Any], ctx: MessageContext) -> None:
        """Apply a participant's reply: in the handler's transaction (`ctx.session`, with the
        inbox row) when it has one, else in a transaction of its own."""
        saga_id = ctx.record.header(H_SAGA_ID)
        answers = ctx.record.header(HEADER_IN_REPLY_TO) or event.causation_id
        if not saga_id or not answers:
            log.warning("%s %s names no saga or command; ignored", event.EVENT_TYPE,
                        event.event_id)
            self.counts["ignored"] += 1
            return
        if ctx.session is not None:
            await self._reply(ctx.session, saga_id, answers, event)
            return
        async with self.store.db.transaction() as session:
            await self._reply(session, saga_id, answers, event)

    async def _reply(self, session: AsyncSession, saga_id: str, answers: str,
                     event: BaseEvent[Any]) -> None:
        record = await self.store.get(session, saga_id)
        if record is None or record.command_id != answers:
            log.info("%s for saga %s ignored: %s", event.EVENT_TYPE, saga_id,
                     "no such saga" if record is None else
                     f"it awaits {record.command_id or 'nothing'} ({record.status} at step "
                     f"{record.step}), not {answers}")
            self.counts["ignored"] += 1
            return
        definition = self.definitions.get(record.saga_type)
        if definition is None:
            log.warning("saga %s is of type %s, unknown here; reply ignored", saga_id,
                        record.saga_type)
            self.counts["ignored"] += 1
            return
        decision = self._decide_reply(definition, record, event)
        if decision is None:
            log.warning("saga %s step %d: %s is neither a success nor a failure reply; ignored",
                        saga_id, record.step, event.EVENT_TYPE)
            self.counts["ignored"] += 1
            return
        await self._apply(session, definition, record, decision)

    def _decide_reply(self, definition: SagaDefinition[Any], record: SagaRecord,
                      event: BaseEvent[Any]) -> Decision | None:
        step = definition.steps[record.step]
        if record.status == RUNNING:
            if isinstance(event, step.successes):
                return step_succeeded(definition, record, event)
            if isinstance(event, step.failures):
                reason = reason_of(event)
                history: History = [(record.step, step.name, "failed", COMPENSATING, reason)]
                return compensate_from(definition, record, record.step - 1, history,
                                       f"{step.name}: {reason}")
        elif record.status == COMPENSATING and step.compensation is not None:
            if isinstance(event, step.compensation.successes):
                return compensation_succeeded(definition, record, event.EVENT_TYPE)
            if isinstance(event, step.compensation.failures):
                return compensation_failed(definition, record, reason_of(event),
                                           self.compensation_retry)
        return None

    # -- deadlines ---------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Act on the sagas whose deadline has passed (at most `sweep_batch`); how many
        this instance moved."""
        moved = 0
        for saga_id, version in await self.store.due(self.sweep_batch):
            try:
                moved += await self._overdue(saga_id, version)
            except Exception:
                log.exception("saga %s: acting on its deadline failed; next sweep retries",
                              saga_id)
        return moved

    async def _sweep_all(self) -> None:
        while await self.sweep() >= self.sweep_batch:
            pass

    async def _overdue(self, saga_id: str, version: int) -> bool:
        record = await self.store.load(saga_id)
        if record is None or record.version != version:
            return False  # moved since the query: whoever moved it set a new deadline
        definition = self.definitions.get(record.saga_type)
        if definition is None:
            return False  # another service's type, or a definition retired: left be
        step = definition.steps[record.step]
        if record.status == RUNNING:
            reason = f"{step.name}: no reply within {step.timeout:g}s"
            history: History = [(record.step, step.name, "timed_out", COMPENSATING, reason)]
            decision = compensate_from(definition, record, record.step, history, reason)
        elif record.command_id is not None:
            decision = compensation_failed(definition, record, "no reply in time",
                                           self.compensation_retry)
        else:
            decision = compensation_due(definition, record)
        with resumed(record.trace_context, f"saga {record.saga_type} deadline",
                     {"saga.id": saga_id, "saga.step": step.name}):
            async with self.store.db.transaction() as session:
                moved = await self._apply(session, definition, record, decision)
        if moved and record.status == RUNNING:
            self.counts["timed_out"] += 1
        return moved

    # -- operators ---------------------------------------------------------------------------

    async def cancel(self, saga_id: str, reason: str) -> SagaRecord:
        """Compensate a running saga (its current step included, whose command may have
        acted) or a completed one (all its steps). Raises `SagaStateError` otherwise."""

        def decide(definition: SagaDefinition[Any], record: SagaRecord) -> Decision:
            if record.status not in (RUNNING, COMPLETED):
                raise SagaStateError(f"saga {saga_id} is {record.status}; only a running or "
                                     "completed saga can be cancelled")
            step = definition.steps[record.step]
            history: History = [(record.step, step.name, "cancelled", COMPENSATING, reason)]
            return compensate_from(definition, record, record.step, history,
                                   f"cancelled: {reason}")

        return await self._operate(saga_id, decide)

    async def retry(self, saga_id: str) -> SagaRecord:
        """Send the compensation of a `needs_attention` saga again, with its attempts back
        (fix the cause first). Raises `SagaStateError` for a saga in any other status."""

        def decide(definition: SagaDefinition[Any], record: SagaRecord) -> Decision:
            if record.status != NEEDS_ATTENTION:
                raise SagaStateError(f"saga {saga_id} is {record.status}; only one that needs "
                                     "attention can be retried")
            step = definition.steps[record.step]
            history: History = [(record.step, step.name, "retried", COMPENSATING, None)]
            return send_compensation(definition, record, record.step, history,
                                     record.last_error, 1)

        return await self._operate(saga_id, decide)

    async def _operate(self, saga_id: str, decide: Any) -> SagaRecord:
        for _ in range(CHANGE_ATTEMPTS):
            record = await self.store.load(saga_id)
            if record is None:
                raise SagaNotFoundError(f"no saga {saga_id}")
            definition = self.definition(record.saga_type)
            decision = decide(definition, record)
            with resumed(record.trace_context, f"saga {record.saga_type} operator",
                         {"saga.id": saga_id}):
                async with self.store.db.transaction() as session:
                    if await self._apply(session, definition, record, decision):
                        return _moved(record, decision.change)
        raise SagaStateError(f"saga {saga_id} kept moving; try again")

    # -- reading -----------------------------------------------------------------------------

    async def get(self, saga_id: str) -> SagaRecord:
        record = await self.store.load(saga_id)
        if record is None:
            raise SagaNotFoundError(f"no saga {saga_id}")
        return record

    async def history(self, saga_id: str) -> list[StepEntry]:
        return await self.store.history(saga_id)

    # -- writing -----------------------------------------------------------------------------

    async def _apply(self, session: AsyncSession, definition: SagaDefinition[Any],
                     record: SagaRecord, decision: Decision) -> bool:
        """Write `decision` if the saga is still at `record.version`; False (nothing
        written) when another transition won."""
        if not await self.store.move(session, record, decision.change):
            log.debug("saga %s moved under us (version %d); leaving it", record.id,
                      record.version)
            self.counts["lost_race"] += 1
            return False
        await self._write(session, definition, record.id, decision)
        if decision.ended and definition.on_end is not None:
            moved = _moved(record, decision.change)
            if moved.status != COMPLETED:
                moved = replace(moved, cause=await self.store.cause(session, record.id))
            await definition.on_end(session, moved, definition.load(moved.data))
        return True

    async def _write(self, session: AsyncSession, definition: SagaDefinition[Any],
                     saga_id: str, decision: Decision) -> None:
        await self.store.log(session, saga_id, decision.history)
        out = decision.send
        if out is not None:
            step = f"{out.step_name}:compensate" if out.compensating else out.step_name
            await self.outbox.add(session, out.topic, out.event, key=out.key, headers=[
                (H_SAGA_ID, saga_id.encode()),
                (H_SAGA_STEP, step.encode()),
                (HEADER_REPLY_TO, definition.reply_topic.encode()),
            ])
        if decision.outcome is not None:
            self.counts[decision.outcome] += 1
            if decision.outcome == NEEDS_ATTENTION:
                log.error("saga %s (%s) needs attention: %s", saga_id, definition.name,
                          decision.change.last_error)


def _moved(record: SagaRecord, change: Change) -> SagaRecord:
    """`record` as `change` left it (the deadline is the database's to stamp: not shown)."""
    return replace(record, status=change.status, step=change.step, data=change.data,
                   command_id=change.command_id, attempts=change.attempts,
                   last_error=change.last_error, version=record.version + 1)
