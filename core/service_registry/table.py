"""What a reader knows: the latest record per instance, and how long ago each was heard from.

Clocks. Heartbeat age is measured on the reader's own monotonic clock, from when the record
reached it: no other machine's clock is involved, so skew between hosts cannot make a live
instance look dead. That is wrong only for records replayed from history (a reader that starts
reads every record still in the topic, at once): for those, the age is the reader's wall clock
minus the record's timestamp (the broker's append time on the registry topic). Skew can only
bend that for one TTL: a reader whose clock is behind shows a dead instance for at most one
TTL; one whose clock is ahead hides a live instance until its next heartbeat arrives, which is
then judged by arrival time.

A tombstone for a dead instance is only due once this reader itself heard nothing from it for
the whole grace period (`received`), whatever the replayed timestamps said: a skewed clock
cannot make a reader delete a live instance. The pure functions and this class do no I/O, so
every rule here is unit-tested without a broker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from core.service_registry.base import Instance


def heard_at(received: float, *, replayed: bool, wall_now: float,
             timestamp_ms: int | None) -> float:
    """When (monotonic, like `received`) the record's instance was last alive.

    Live records: when the record arrived. Replayed ones: `received` less the record's age by
    the wall clock (never negative: a record from the future is simply fresh); a record
    without a timestamp is taken as too old to count until its instance speaks again.
    """
    if not replayed:
        return received
    if timestamp_ms is None or timestamp_ms < 0:
        return -math.inf
    return received - max(0.0, wall_now - timestamp_ms / 1000)


@dataclass(frozen=True, slots=True)
class _Entry:
    instance: Instance
    heard: float
    received: float


class InstanceTable:
    """The latest announcement per instance id, aged by `ttl`; one task at a time.

    `live` answers from the entries heard from within `ttl` seconds, sorted by instance id;
    `changed` tells which services' live sets moved since it was last asked (joins, leaves and
    age-outs alike), for `watch`.
    """

    def __init__(self, ttl: float, grace: float) -> None:
        self.ttl = ttl
        self.grace = grace
        self._entries: dict[str, _Entry] = {}
        self._reported: dict[str, tuple[Instance, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def upsert(self, instance: Instance, *, heard: float, received: float) -> None:
        """Record an announcement; an older heartbeat than the one known never wins."""
        known = self._entries.get(instance.instance_id)
        if known is not None and known.heard > heard:
            heard = known.heard
        self._entries[instance.instance_id] = _Entry(instance, heard, received)

    def remove(self, instance_id: str) -> None:
        self._entries.pop(instance_id, None)

    def get(self, instance_id: str) -> Instance | None:
        entry = self._entries.get(instance_id)
        return entry.instance if entry is not None else None

    def live(self, service: str, now: float) -> list[Instance]:
        """The instances of `service` heard from within the TTL, by instance id."""
        return sorted(
            (e.instance for e in self._entries.values()
             if e.instance.service == service and now - e.heard <= self.ttl),
            key=lambda i: i.instance_id)

    def services(self, now: float) -> list[str]:
        """The services with at least one live instance, sorted."""
        return sorted({e.instance.service for e in self._entries.values()
                       if now - e.heard <= self.ttl})

    def dead(self, now: float, *, spare: str | None = None) -> list[str]:
        """The ids due a tombstone: silent past the grace period by every measure, except
        `spare` (this process's own instance, which its process never gives up on)."""
        return sorted(
            instance_id for instance_id, e in self._entries.items()
            if instance_id != spare and now - e.heard > self.grace
            and now - e.received > self.grace)

    def changed(self, now: float) -> dict[str, tuple[Instance, ...]]:
        """Each service whose live instances differ from the last call's, with the new ones."""
        current = {service: tuple(self.live(service, now))
                   for service in {e.instance.service for e in self._entries.values()}
                   | set(self._reported)}
        moved = {service: instances for service, instances in current.items()
                 if self._reported.get(service, ()) != instances}
        self._reported = {service: instances for service, instances in current.items()
                          if instances}
        return moved


class PausingClock:
    """Monotonic time that stands still while the log is out of reach.

    A reader that cannot reach the log hears no heartbeats, from anyone: that says nothing
    about the instances, only about the reader. Were it to age them by real time, a broker
    outage longer than the TTL would empty every `discover` in the fleet at once, turning a
    registry outage into an outage of every call between services. So the table is aged by
    this clock, which stops at the last contact with the log and resumes, without a jump,
    when contact is back (Eureka calls the same idea self-preservation). Crashes during the
    outage are noticed one TTL after it ends.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._paused = 0.0
        self._last_contact = clock()
        self._lost_at: float | None = None

    @property
    def in_contact(self) -> bool:
        return self._lost_at is None

    def now(self) -> float:
        real = self._clock() if self._lost_at is None else self._lost_at
        return real - self._paused

    def contact(self) -> None:
        """The log answered just now."""
        now = self._clock()
        if self._lost_at is not None:
            self._paused += now - self._lost_at
            self._lost_at = None
        self._last_contact = now

    def lost(self) -> None:
        """The log did not answer: time stops at the last contact."""
        if self._lost_at is None:
            self._lost_at = self._last_contact
