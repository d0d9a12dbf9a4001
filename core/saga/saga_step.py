"""What a saga is: a name, its typed data, and ordered steps, each a command with its replies.

    ride = SagaDefinition(
        "ride", RideData, reply_topic="order.saga-replies",
        steps=[
            SagaStep("reserve_driver", topic="driver.commands",
                     command=lambda d: ReserveDriver(data=...),
                     success=DriverReserved, failure=(NoDriverAvailable,),
                     on_success=lambda d, reply: d.model_copy(
                         update={"driver_id": reply.data.driver_id}),
                     timeout=10,
                     compensation=Compensation(lambda d: ReleaseDriver(data=...),
                                               success=DriverReleased)),
            SagaStep("confirm", ...),
        ])

A step's command goes out through the outbox, keyed by the saga id unless `key` says
otherwise; a compensation goes to the step's topic unless it names one, so on one topic and key
a step's command always reaches the participant before its compensation. Data is a pydantic
model, stored as JSON with the instance and handed back typed to every builder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from core.messaging import BaseEvent
from core.saga.errors import SagaDefinitionError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from core.saga.store import SagaRecord

D = TypeVar("D", bound=BaseModel)
Replies = tuple[type[BaseEvent[Any]], ...]


def _as_tuple(types: type[BaseEvent[Any]] | Sequence[type[BaseEvent[Any]]]) -> Replies:
    return (types,) if isinstance(types, type) else tuple(types)


@dataclass(frozen=True)
class Compensation(Generic[D]):
    """Undoes a completed step: a command whose `success` reply confirms it is undone.

    It may be sent more than once (retries after a failure or a timeout, a retry by an
    operator) and may arrive for a step whose command had no effect (a step that timed out is
    compensated too, since its command may have acted after all): the participant must undo by
    the saga id, idempotently ("release the driver this saga holds, if it holds one").
    """

    command: Callable[[D], BaseEvent[Any]]
    success: type[BaseEvent[Any]] | Sequence[type[BaseEvent[Any]]]
    failure: type[BaseEvent[Any]] | Sequence[type[BaseEvent[Any]]] = ()
    topic: str | None = None
    """Default: the step's topic (ordered after the step's command on the same key)."""
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise SagaDefinitionError(f"compensation timeout must be positive: {self.timeout}")

    @property
    def successes(self) -> Replies:
        return _as_tuple(self.success)

    @property
    def failures(self) -> Replies:
        return _as_tuple(self.failure)


@dataclass(frozen=True)
class SagaStep(Generic[D]):
    """One step: send `command(data)` to `topic`, then wait up to `timeout` seconds for one
    of `success` (the step is done; `on_success(data, reply)` returns the data to keep) or of
    `failure` (the step refused: the completed steps before it are compensated). No reply in
    time compensates this step too, then the earlier ones."""

    name: str
    topic: str
    command: Callable[[D], BaseEvent[Any]]
    success: type[BaseEvent[Any]] | Sequence[type[BaseEvent[Any]]]
    failure: type[BaseEvent[Any]] | Sequence[type[BaseEvent[Any]]] = ()
    timeout: float = 30.0
    on_success: Callable[[D, Any], D] | None = None
    compensation: Compensation[D] | None = None
    key: Callable[[D], str] | None = None
    """The Kafka key of the command (and compensation); default the saga id."""

    def __post_init__(self) -> None:
        if not self.name:
            raise SagaDefinitionError("a saga step needs a name")
        if not self.timeout > 0:
            raise SagaDefinitionError(f"step {self.name}: timeout must be positive")
        if not self.successes:
            raise SagaDefinitionError(f"step {self.name}: name its success reply type")

    @property
    def successes(self) -> Replies:
        return _as_tuple(self.success)

    @property
    def failures(self) -> Replies:
        return _as_tuple(self.failure)

    @property
    def compensation_topic(self) -> str:
        assert self.compensation is not None
        return self.compensation.topic or self.topic


OnEnd = Callable[["AsyncSession", "SagaRecord", Any], Awaitable[None]]
"""`async def on_end(session, record, data)`: runs in the transaction of the saga's last
transition (completed, compensated or needs_attention), so the service's own state (the
order's status) changes with it, or not at all. A saga that turned back says why in
`record.cause` (the refusal, the timeout or the cancel, not what its compensations met)."""


@dataclass(frozen=True)
class SagaDefinition(Generic[D]):
    """A saga type: `name` (stored with each instance, so keep it stable), the model of its
    `data`, the topic its participants reply to (the orchestrating service subscribes to it),
    and its ordered `steps`."""

    name: str
    data: type[D]
    reply_topic: str
    steps: Sequence[SagaStep[D]]
    on_end: OnEnd | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise SagaDefinitionError("a saga needs a name")
        if not self.steps:
            raise SagaDefinitionError(f"saga {self.name}: no steps")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise SagaDefinitionError(f"saga {self.name}: step names repeat: {names}")
        object.__setattr__(self, "steps", tuple(self.steps))

    def load(self, raw: Any) -> D:
        return self.data.model_validate(raw)

    def reply_types(self) -> list[type[BaseEvent[Any]]]:
        """Every event type a participant may answer this saga with, each once."""
        seen: dict[tuple[str, int], type[BaseEvent[Any]]] = {}
        for step in self.steps:
            kinds = [*step.successes, *step.failures]
            if step.compensation is not None:
                kinds += [*step.compensation.successes, *step.compensation.failures]
            for kind in kinds:
                seen.setdefault((kind.EVENT_TYPE, kind.EVENT_VERSION), kind)
        return list(seen.values())
