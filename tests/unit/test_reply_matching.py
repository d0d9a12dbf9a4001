"""Request-reply's matching of replies to calls, without a broker: `PendingReplies`."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from core.messaging.errors import RemoteHandlerError, RequestCancelledError
from core.messaging.events import IntegrationEvent
from core.messaging.request_reply import PendingReplies
from core.messaging.serialization import EventRegistry, EventSerializer
from core.messaging.types import HEADER_IN_REPLY_TO, Record


class Answer(BaseModel):
    value: str


class Answered(IntegrationEvent[Answer]):
    EVENT_TYPE = "test.answered"


def pending() -> tuple[PendingReplies, EventSerializer]:
    events = EventRegistry()
    events.register(Answered)
    serializer = EventSerializer(events)
    return PendingReplies(serializer), serializer


def reply(serializer: EventSerializer, in_reply_to: str, value: str) -> Record:
    data, headers = serializer.serialize(Answered(data=Answer(value=value)))
    headers.append((HEADER_IN_REPLY_TO, in_reply_to.encode()))
    return Record("replies.x", 0, 0, None, data, headers)


async def test_replies_answered_in_reverse_order_reach_their_own_calls() -> None:
    calls, serializer = pending()
    first_id, first = calls.expect()
    second_id, second = calls.expect()
    assert first_id != second_id

    assert calls.resolve(reply(serializer, second_id, "for the second"))
    assert not first.done()
    assert calls.resolve(reply(serializer, first_id, "for the first"))

    first_reply, second_reply = await first, await second
    assert isinstance(first_reply, Answered) and first_reply.data.value == "for the first"
    assert isinstance(second_reply, Answered) and second_reply.data.value == "for the second"


async def test_a_reply_nobody_waits_for_is_dropped() -> None:
    calls, serializer = pending()
    request_id, waiting = calls.expect()

    assert not calls.resolve(reply(serializer, "someone-else", "stray"))
    calls.forget(request_id)  # the call timed out
    assert not calls.resolve(reply(serializer, request_id, "late"))
    assert not waiting.done() and len(calls) == 0
    calls.forget(request_id)  # forgetting twice (or an id never given) is harmless


async def test_an_unreadable_reply_fails_its_call_and_stop_fails_the_rest() -> None:
    calls, _ = pending()
    garbled_id, garbled = calls.expect()
    _, waiting = calls.expect()

    calls.resolve(Record("replies.x", 0, 0, None, b"not json",
                         [(HEADER_IN_REPLY_TO, garbled_id.encode())]))
    calls.cancel_all("client stopped")

    with pytest.raises(RemoteHandlerError, match="unreadable reply"):
        await garbled
    with pytest.raises(RequestCancelledError, match="client stopped"):
        await waiting
