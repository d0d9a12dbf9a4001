"""One trace, end to end, through real processes and Kafka: a client's register request
through the gateway is one trace (continuing the client's `traceparent`) whose spans, written
by each process to the stack's JSON-lines file, chain parent to child: the gateway's server
span, auth's, auth's send of `auth.events` (by its outbox relay, after the request ended),
the user service's handler run, its send of `user.events`, and the notification service's
handler run of that."""

from __future__ import annotations

import os
import uuid

import httpx

from core.tracing import SpanRecord, read_spans
from tests.e2e.system import PASSWORD, System, eventually
from tests.helpers.cli import cli

CHAIN = [  # (service, kind, name), each the parent of the next
    ("gateway", "SERVER", "POST /api/auth/register"),
    ("auth", "SERVER", "POST /auth/register"),
    ("auth", "PRODUCER", "send auth.events"),
    ("user", "CONSUMER", "process auth.events auth.user_registered"),
    ("user", "PRODUCER", "send user.events"),
    ("notification", "CONSUMER", "process user.events user.profile_created"),
]


def find(spans: list[SpanRecord], service: str, kind: str, name: str) -> SpanRecord | None:
    found = [s for s in spans if (s.service, s.kind, s.name) == (service, kind, name)]
    assert len(found) <= 1, found
    return found[0] if found else None


async def test_a_request_through_the_gateway_and_the_events_it_causes_form_one_trace(
        system: System) -> None:
    trace_id, client_span = uuid.uuid4().hex, os.urandom(8).hex()
    email = f"trace-{uuid.uuid4().hex[:12]}@example.com"
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=15.0) as gateway:
        answer = await gateway.post("/api/auth/register",
                                    json={"email": email, "password": PASSWORD},
                                    headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    assert answer.status_code == 201, answer.text
    path = system.stack.traces_file

    async def chain() -> list[SpanRecord] | None:
        spans = read_spans([path], trace_id)
        found = [find(spans, *link) for link in CHAIN]
        return None if None in found else [s for s in found if s is not None]

    spans = await eventually(chain, timeout=30, interval=0.3)
    parents = [client_span] + [span.span_id for span in spans[:-1]]
    assert [(s.service, s.kind, s.name, s.parent_span_id) for s in spans] == \
        [(*link, parent) for link, parent in zip(CHAIN, parents, strict=True)]
    assert all(span.status != "ERROR" for span in spans)
    # auth's handler-free path ends before its relay's send begins: the row waited for it.
    assert spans[2].start_ns >= spans[1].start_ns

    shown = await cli("traces", "show", trace_id, "--file", str(path))
    assert shown.exit_code == 0, shown.output
    for _, _, name in CHAIN:
        assert name in shown.output
