"""`MetadataReader`: cluster metadata from a client that is replaced when it stops answering.

Why: after the broker was paused (SIGSTOP) for tens of seconds, librdkafka 2.16 clients were
seen to stay unable to read metadata for good, about once in five drills under load: every
`list_topics` failed with `_TRANSPORT` ("no usable broker") for more than four minutes after
the broker came back, while the same client went on producing. A readiness check asking that
client said `degraded` for as long as the process lived. A client made afresh connects anew
and answers at once, so a reader whose client has failed for `renew_after` seconds in a row
asks through a new client of its own from then on (and replaces that one too if it also
stops answering). While the broker is really away every client fails: a new one is made at
most once per `renew_after`, not per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import KafkaException

log = logging.getLogger(__name__)

RENEW_AFTER = 15.0
"""Seconds of failing metadata requests before the reader asks through a new client."""


class MetadataClient(Protocol):
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...


class MetadataReader:
    """Lists topics through `client` (the caller's own, shared), and through a client made
    by `make_client` once that one has failed for `renew_after` seconds in a row."""

    def __init__(self, client: MetadataClient, make_client: Callable[[], MetadataClient],
                 *, renew_after: float = RENEW_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._make_client = make_client
        self.renew_after = renew_after
        self._clock = clock
        self._failing_since: float | None = None
        self.renewals = 0
        """How many times a new client replaced one that stopped answering."""

    async def list_topics(self, timeout: float) -> Any:
        """The cluster's metadata (every topic: a request naming one would create it on a
        broker that creates topics on first use). Raises KafkaException when no broker
        answers within `timeout` seconds."""
        client = self._client
        try:
            meta = await asyncio.to_thread(client.list_topics, timeout=timeout)
        except KafkaException:
            self._failed(client)
            raise
        if client is self._client:
            self._failing_since = None
        return meta

    def _failed(self, client: MetadataClient) -> None:
        if client is not self._client:  # a call that began before the last renewal
            return
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self.renew_after:
            log.warning("kafka: no metadata through this client for %.0fs; asking through a "
                        "new one", now - self._failing_since)
            self._client = self._make_client()
            self._failing_since = now
            self.renewals += 1
