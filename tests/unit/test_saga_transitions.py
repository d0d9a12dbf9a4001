"""The saga state machine without I/O: which step is compensated next, when a compensation
gives up, what a definition refuses, and the reason a failure reply gives."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from core.messaging import IntegrationEvent
from core.resilience import RetryPolicy
from core.saga import (
    COMPENSATED,
    COMPENSATING,
    NEEDS_ATTENTION,
    RUNNING,
    Compensation,
    SagaDefinition,
    SagaDefinitionError,
    SagaRecord,
    SagaStep,
)
from core.saga.compensation import (
    compensate_from,
    compensation_due,
    compensation_failed,
    compensation_succeeded,
    last_compensable,
)
from core.saga.transitions import command, reason_of, step_succeeded
from tests.saga_rig import Act, ActData, Done, DoneData, Refused, RefusedData, TripData, trip_saga

SAGA = trip_saga("cmds", "replies")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(status: str = RUNNING, step: int = 0, attempts: int = 0, **data: object
           ) -> SagaRecord:
    return SagaRecord("s-1", "trip", TripData(trip="t", **data).model_dump(mode="json"), status,
                      step, "c-1", NOW, attempts, 3, None, "corr-1", NOW, NOW)


def test_compensation_starts_at_the_highest_step_that_has_one() -> None:
    assert last_compensable(SAGA, 2) == 1  # confirm has none: payment is the first undone
    assert last_compensable(SAGA, 1) == 1
    assert last_compensable(SAGA, 0) == 0
    assert last_compensable(SAGA, -1) is None


def test_a_refusal_at_the_first_step_has_nothing_to_undo() -> None:
    decision = compensate_from(SAGA, record(), -1, [], "seat: refused")
    assert decision.change.status == COMPENSATED and decision.send is None and decision.ended


def test_compensating_sends_the_step_compensation_to_its_topic_keyed_by_the_saga() -> None:
    decision = compensate_from(SAGA, record(step=2), 2, [], "confirm: refused")
    assert decision.send is not None
    assert (decision.send.topic, decision.send.key, decision.send.step) == ("cmds", "s-1", 1)
    assert decision.send.event.data.action == "refund"
    assert decision.send.event.correlation_id == "corr-1"
    assert decision.change.command_id == str(decision.send.event.event_id)
    assert (decision.change.status, decision.change.attempts) == (COMPENSATING, 1)


def test_a_done_compensation_moves_down_and_the_last_one_ends_the_saga() -> None:
    down = compensation_succeeded(SAGA, record(COMPENSATING, step=1, attempts=2), "done")
    assert down.send is not None and down.send.step == 0 and down.change.attempts == 1
    end = compensation_succeeded(SAGA, record(COMPENSATING, step=0), "done")
    assert end.change.status == COMPENSATED and end.outcome == COMPENSATED


def test_a_failed_compensation_waits_then_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=2.0, jitter=False)
    wait = compensation_failed(SAGA, record(COMPENSATING, step=1, attempts=2), "no", policy)
    assert wait.change.status == COMPENSATING and wait.change.command_id is None
    assert wait.change.wait == 4.0 and not wait.ended
    assert "attempt 2" in (wait.change.last_error or "")
    stuck = compensation_failed(SAGA, record(COMPENSATING, step=1, attempts=3), "no", policy)
    assert stuck.change.status == NEEDS_ATTENTION and stuck.ended
    assert stuck.outcome == NEEDS_ATTENTION and stuck.send is None
    again = compensation_due(SAGA, record(COMPENSATING, step=1, attempts=2))
    assert again.send is not None and again.change.attempts == 3


def test_a_success_keeps_what_the_step_says_and_the_last_one_completes() -> None:
    seat = step_succeeded(SAGA, record(step=0), Done(data=DoneData(action="reserve", ref="A1")))
    assert seat.change.data["seat"] == "A1" and seat.change.step == 1
    assert seat.send is not None and seat.send.event.data.action == "charge"
    last = step_succeeded(SAGA, record(step=2), Done(data=DoneData(action="confirm", ref="x")))
    assert last.change.status == "completed" and last.ended and last.send is None


def test_a_failure_reply_gives_its_reason() -> None:
    refused = Refused(data=RefusedData(action="charge", reason="card declined"))
    assert reason_of(refused) == "test.saga.refused: card declined"
    assert reason_of(Done(data=DoneData(action="x", ref="y"))) == "test.saga.done"


def _step(name: str, **options: object) -> SagaStep[TripData]:
    options.setdefault("success", Done)
    return SagaStep(name, "cmds", lambda d: Act(data=ActData(action=name)),
                    **options)  # type: ignore[arg-type]


def test_definitions_that_cannot_run_are_refused() -> None:
    with pytest.raises(SagaDefinitionError):
        SagaDefinition("trip", TripData, "replies", [])
    with pytest.raises(SagaDefinitionError):
        SagaDefinition("trip", TripData, "replies", [_step("a"), _step("a")])
    with pytest.raises(SagaDefinitionError):
        _step("a", timeout=0)
    with pytest.raises(SagaDefinitionError):
        SagaStep("a", "cmds", lambda d: Act(data=ActData(action="a")), success=())
    with pytest.raises(SagaDefinitionError):
        Compensation(lambda d: Act(data=ActData(action="a")), success=Done, timeout=-1)


def test_the_reply_types_are_each_listed_once() -> None:
    assert SAGA.reply_types() == [Done, Refused]


class DoneV2(Done):
    EVENT_VERSION = 2


def test_a_reply_type_is_named_alone_or_in_a_sequence() -> None:
    alone = _step("a")
    assert (alone.successes, alone.failures) == ((Done,), ())
    several = _step("b", success=[Done, Refused], failure=(Refused,))
    assert (several.successes, several.failures) == ((Done, Refused), (Refused,))
    undo: Compensation[TripData] = Compensation(
        lambda d: Act(data=ActData(action="u")), success=[Done], failure=Refused)
    assert (undo.successes, undo.failures) == ((Done,), (Refused,))


def test_a_compensation_goes_to_the_step_topic_unless_it_names_its_own() -> None:
    def undo(topic: str | None) -> Compensation[TripData]:
        return Compensation(lambda d: Act(data=ActData(action="u")), success=Done, topic=topic)

    assert _step("a", compensation=undo(None)).compensation_topic == "cmds"
    assert _step("a", compensation=undo("undo")).compensation_topic == "undo"


def test_timeouts_must_be_positive_and_may_be_short() -> None:
    with pytest.raises(SagaDefinitionError, match="timeout must be positive"):
        _step("a", timeout=0)
    with pytest.raises(SagaDefinitionError, match="compensation timeout must be positive"):
        Compensation(lambda d: Act(data=ActData(action="a")), success=Done, timeout=0)
    assert _step("a", timeout=0.5).timeout == 0.5
    assert Compensation(lambda d: Act(data=ActData(action="a")), success=Done,
                        timeout=0.5).timeout == 0.5


def test_each_refusal_says_what_is_wrong() -> None:
    with pytest.raises(SagaDefinitionError, match=r"^a saga step needs a name$"):
        _step("")
    with pytest.raises(SagaDefinitionError, match="name its success reply type"):
        SagaStep("a", "cmds", lambda d: Act(data=ActData(action="a")), success=[])
    with pytest.raises(SagaDefinitionError, match=r"^a saga needs a name$"):
        SagaDefinition("", TripData, "replies", [_step("a")])
    with pytest.raises(SagaDefinitionError, match="no steps"):
        SagaDefinition("trip", TripData, "replies", [])
    with pytest.raises(SagaDefinitionError, match=r"step names repeat: \['a', 'b', 'a'\]"):
        SagaDefinition("trip", TripData, "replies", [_step("a"), _step("b"), _step("a")])


def test_a_definition_keeps_its_own_steps_and_loads_its_typed_data() -> None:
    steps = [_step("a"), _step("b")]
    definition = SagaDefinition("trip", TripData, "replies", steps)
    steps.append(_step("c"))
    assert [s.name for s in definition.steps] == ["a", "b"]
    assert definition.load({"trip": "t", "seat": "A1"}) == TripData(trip="t", seat="A1")


def test_each_version_of_a_reply_type_is_listed() -> None:
    definition = SagaDefinition("trip", TripData, "replies", [
        _step("a", success=[Done, DoneV2]), _step("b", success=DoneV2)])
    assert definition.reply_types() == [Done, DoneV2]


def test_a_command_carries_the_saga_correlation_unless_its_builder_set_one() -> None:
    def own(data: TripData) -> Act:
        return Act(data=ActData(action="a"), correlation_id="builder's")

    definition = SagaDefinition("trip", TripData, "replies", [
        _step("a"), SagaStep("b", "cmds", own, success=Done)])
    assert command(definition, "s-1", "corr-1", TripData(trip="t"), 0).event.correlation_id == (
        "corr-1")
    assert command(definition, "s-1", "corr-1", TripData(trip="t"), 1).event.correlation_id == (
        "builder's")
    assert command(definition, "s-1", None, TripData(trip="t"), 0).event.correlation_id is None


def _undo(name: str) -> Compensation[TripData]:
    return Compensation(lambda d: Act(data=ActData(action=f"undo {name}")), success=Done)


def test_only_steps_at_or_below_the_one_given_are_compensated() -> None:
    last_undone = SagaDefinition("t", TripData, "r", [
        _step("a"), _step("b", compensation=_undo("b"))])
    assert last_compensable(last_undone, 0) is None  # never the last step, from below
    assert last_compensable(last_undone, 1) == 1
    both = SagaDefinition("t", TripData, "r", [
        _step("a", compensation=_undo("a")), _step("b", compensation=_undo("b"))])
    assert last_compensable(both, 1) == 1


def test_a_done_compensation_with_nothing_left_below_ends_the_saga_at_its_step() -> None:
    middle = SagaDefinition("t", TripData, "r", [
        _step("a"), _step("b", compensation=_undo("b")), _step("c")])
    end = compensation_succeeded(middle, record(COMPENSATING, step=1), "done")
    assert (end.change.status, end.change.step, end.send) == (COMPENSATED, 1, None)
    assert end.history[-1] == (1, "b", "compensated_all", COMPENSATED, None)


def test_a_short_backoff_is_kept_as_it_is() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=False)
    wait = compensation_failed(SAGA, record(COMPENSATING, step=1, attempts=1), "no", policy)
    assert wait.change.wait == 0.01


def test_a_step_may_key_its_command_by_the_saga_data() -> None:
    keyed = SagaDefinition("t", TripData, "r", [_step("a", key=lambda d: f"trip-{d.trip}")])
    assert command(keyed, "s-1", None, TripData(trip="t"), 0).key == "trip-t"


class ErrorData(BaseModel):
    error: str


class Failed(IntegrationEvent[ErrorData]):
    EVENT_TYPE = "test.saga.failed"


class CodeData(BaseModel):
    reason: int


class Coded(IntegrationEvent[CodeData]):
    EVENT_TYPE = "test.saga.coded"


def test_a_failure_reply_may_say_why_as_its_error_and_only_text_counts() -> None:
    assert reason_of(Failed(data=ErrorData(error="disk full"))) == "test.saga.failed: disk full"
    assert reason_of(Failed(data=ErrorData(error=""))) == "test.saga.failed"
    assert reason_of(Coded(data=CodeData(reason=7))) == "test.saga.coded"
