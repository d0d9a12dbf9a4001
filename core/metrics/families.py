"""The counters and histograms of one process, by the names dashboards and alerts query.

Counted where their cause happens (the HTTP middleware, the dispatcher's observer, the
producer's delivery reports, the verifier). The gauges are not here: they are read from the
running parts at scrape time (`collectors.py`, `database.py`), so the hot path pays nothing
for them. Every label set is bounded: route templates, topics, event types, reasons.

`Metrics(registry)` builds them on any registry (a fresh one per unit test);
`process_metrics()` is the process's own, on prometheus-client's default registry, which in
multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set) writes to files every worker's scrape sums.
"""

from __future__ import annotations

import os
import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HANDLER_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Handlers run from a millisecond (an inbox claim and a row) to seconds (a slow call)."""
CONSUMED_DOC = "Handler runs that finished without an error."
DURATION_DOC = "Handler runs, successful or not."
CLAIMS_DOC = "Inbox claims: claimed (the handler ran) or duplicate."
HTTP_BUCKETS = (.0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The process-wide counters and histograms (thread-safe: prometheus-client locks each).

    `tallied` (the default, outside multiprocess mode): the three families counted for every
    handled record (consumed, handler duration, inbox claims) are not registered here; the
    event metrics tally them in plain numbers on the loop and report them at scrape time
    (`core.metrics.tally`), a tenth of the cost per record. In multiprocess mode they are
    prometheus-client's own, so that every worker's count lands in the shared files."""

    def __init__(self, registry: CollectorRegistry, *, tallied: bool = True) -> None:
        self.registry = registry
        self.tallied = tallied
        hot = None if tallied else registry

        def counter(name: str, doc: str, labels: tuple[str, ...],
                    on: CollectorRegistry | None = registry) -> Counter:
            return Counter(name, doc, labels, registry=on)

        self.http_requests = counter(
            "kfm_http_requests", "HTTP responses by method, route template and status.",
            ("method", "route", "status"))
        self.http_duration = Histogram(
            "kfm_http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte.",
            ("method", "route"), buckets=HTTP_BUCKETS, registry=registry)
        self.published = counter(
            "kfm_events_published", "Records the broker acknowledged, by topic and type.",
            ("topic", "event_type"))
        self.publish_failures = counter(
            "kfm_events_publish_failures", "Records the producer gave up on.", ("topic",))
        self.consumed = counter(
            "kfm_events_consumed", CONSUMED_DOC, ("topic", "event_type"), hot)
        self.retried = counter(
            "kfm_events_retried", "Handler attempts that failed and will be retried.",
            ("topic", "event_type"))
        self.dead_lettered = counter(
            "kfm_events_dead_lettered", "Records sent to <topic>.dlq.", ("topic", "event_type"))
        self.skipped = counter(
            "kfm_events_skipped", "Records not handled on purpose (duplicate, no_handler).",
            ("topic", "event_type", "reason"))
        self.handler_duration = Histogram(
            "kfm_event_handler_duration_seconds", DURATION_DOC, ("topic", "event_type"),
            buckets=HANDLER_BUCKETS, registry=hot)
        self.inbox_claims = counter("kfm_inbox_claims", CLAIMS_DOC, ("group", "outcome"), hot)
        self.rate_limited = counter(
            "kfm_rate_limited_requests", "Requests refused by a rate limit (429).", ("route",))
        self.jwks_refreshes = counter(
            "kfm_jwks_refreshes", "JWKS fetches, ok or error.", ("outcome",))
        self.token_rejections = counter(
            "kfm_token_rejections", "Tokens refused, by the rule they broke.", ("reason",))


_lock = threading.Lock()
_process: Metrics | None = None


def process_metrics() -> Metrics:
    """The process's metrics, built on first use (after `PROMETHEUS_MULTIPROC_DIR` is read:
    prometheus-client decides at import whether values go to files)."""
    global _process
    with _lock:
        if _process is None:
            _process = Metrics(REGISTRY, tallied=not os.environ.get(MULTIPROC_ENV))
        return _process
