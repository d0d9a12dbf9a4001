"""`LogRegistry`: a registry kept in a compacted log that every instance reads whole.

Writers: `register` announces the instance and starts its heartbeats (one task, here: the
backend owns its liveness, so no caller can forget it); each heartbeat rewrites the whole
record. `deregister` stops the heartbeats, then writes a tombstone. A heartbeat that fails is
logged and retried at the next beat; the process never gives up on its own instance.

Readers: a task applies every record to an `InstanceTable` (rules and clocks: `table.py`). A
sweeper, every `tick`, asks the log whether it is there (while it is not, aging stops: see
`PausingClock`), tells watchers about age-outs and writes tombstones for instances silent past
the grace period (any reader may: the writes are idempotent, and a mistaken one is undone
by the instance's next heartbeat). `start` waits, up to `catch_up_timeout`, until the reader
has read what the log held, so the first `discover` is not empty by mistake.

Trust: with a `RecordTrust` holding a key, this process's records are signed and every record
read must be (`trust.py`); a refused one never reaches the table, is logged once per instance
id and reason, and counted in `refused`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from core.service_registry.base import Change, Instance, RegistryError, ServiceRegistry
from core.service_registry.log import LogRecord, RegistryLog
from core.service_registry.records import RecordError, Tombstone, decode, encode
from core.service_registry.table import InstanceTable, PausingClock, heard_at
from core.service_registry.trust import RecordRefusedError, RecordTrust
from core.service_registry.watch import Watchers
from core.tasks import cancel_and_wait, periodically

log = logging.getLogger(__name__)

READ_RETRY = 1.0
"""Seconds between attempts when reading the log fails."""
DEREGISTER_TIMEOUT = 5.0
"""At most this long a shutdown waits for its tombstone: without it, the TTL removes it."""
PING_TIMEOUT = 3.0
"""Seconds the log has to answer the sweeper's "are you there"."""


class LogRegistry(ServiceRegistry):
    """A `ServiceRegistry` over a `RegistryLog`. One event loop; `discover` is a lookup."""

    def __init__(
        self,
        log_: RegistryLog,
        *,
        ttl: float,
        heartbeat_interval: float,
        grace: float,
        start_timeout: float = 30.0,
        catch_up_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        trust: RecordTrust | None = None,
    ) -> None:
        if not 0 < heartbeat_interval < ttl <= grace:
            raise RegistryError("need 0 < heartbeat interval < TTL <= grace period, got "
                                f"{heartbeat_interval:g}, {ttl:g}, {grace:g}")
        self._log = log_
        self.ttl = ttl
        self.heartbeat_interval = heartbeat_interval
        self.tick = min(heartbeat_interval, ttl / 4)
        self._start_timeout = start_timeout
        self._catch_up_timeout = catch_up_timeout
        self._time = PausingClock(clock)
        self._wall = wall_clock
        self.trust = trust
        self._warned: dict[bytes | None, set[str]] = {}
        self.table = InstanceTable(ttl, grace)
        self._watchers = Watchers(self._snapshot)
        self._instance: Instance | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._caught_up = asyncio.Event()
        self._read_error: str | None = None
        self._unreadable: set[bytes | None] = set()
        self._started = False

    # -- lifecycle

    async def start(self) -> None:
        if self._started:
            return
        await self._log.open(self._start_timeout)
        self._started = True
        self._spawn("reader", self._read_forever())
        self._spawn("sweeper", self._sweep_forever())
        try:
            async with asyncio.timeout(self._catch_up_timeout):
                await self._caught_up.wait()
        except TimeoutError:
            log.warning("registry: not caught up with the log after %gs; discover may miss "
                        "instances until it is (readiness says so)", self._catch_up_timeout)

    async def stop(self) -> None:
        if not self._started:
            return
        await self.deregister()
        await self._close()

    async def abandon(self) -> None:
        """Stop without deregistering, as a crashed process would (for tests and drills)."""
        if self._started:
            await self._close()

    async def _close(self) -> None:
        self._started = False
        for name in list(self._tasks):
            await self._cancel(name)
        await self._log.close()

    async def check(self) -> None:
        if not self._started:
            raise RegistryError("the registry is not started")
        reader = self._tasks.get("reader")
        if reader is None or reader.done():
            raise RegistryError("the registry reader stopped")
        if self._read_error is not None:
            raise RegistryError(f"the registry reader cannot read: {self._read_error}")
        if not self._caught_up.is_set():
            raise RegistryError("the registry reader has not caught up with the log yet")
        if not self._time.in_contact:
            raise RegistryError("the registry log is out of reach; instances are kept as they "
                                "were when it was last reached")

    # -- this instance

    async def register(self, instance: Instance) -> None:
        if not self._started:
            raise RegistryError("start the registry before registering")
        if self._instance is not None and self._instance.instance_id != instance.instance_id:
            raise RegistryError(f"instance {self._instance.instance_id} is registered already; "
                                "deregister it first")
        previous, self._instance = self._instance, instance
        try:
            await self._write(instance.instance_id, self._encode(instance))
        except RegistryError:
            self._instance = previous  # not registered: nothing to heartbeat or deregister
            raise
        self._heard(instance)
        if "heartbeat" not in self._tasks:
            self._spawn("heartbeat", self._beat_forever())

    async def heartbeat(self) -> None:
        instance = self._instance
        if instance is None:
            raise RegistryError("no instance is registered")
        await self._write(instance.instance_id, self._encode(instance))
        if self._instance is instance:  # not deregistered while the write was on its way
            self._heard(instance)

    async def deregister(self) -> None:
        instance, self._instance = self._instance, None
        if instance is None:
            return
        await self._cancel("heartbeat")
        try:
            await self._write(instance.instance_id, None, DEREGISTER_TIMEOUT)
        except RegistryError as exc:
            log.warning("registry: could not deregister %s (%s); it ages out within %gs",
                        instance.instance_id, exc, self.ttl)
        self.table.remove(instance.instance_id)
        self._publish()

    # -- everyone

    async def discover(self, service: str) -> list[Instance]:
        return self.table.live(service, self._time.now())

    def watch(self, service: str | None = None) -> AsyncIterator[Change]:
        return self._watchers.watch(service)

    @property
    def refused(self) -> dict[str, int]:
        """Records refused as untrustworthy so far, by reason (see `RecordTrust`)."""
        return dict(self.trust.refused) if self.trust is not None else {}

    # -- internals

    def _encode(self, instance: Instance) -> bytes:
        return encode(instance, self.trust.seal if self.trust is not None else None)

    def _snapshot(self) -> dict[str, list[Instance]]:
        now = self._time.now()
        return {service: self.table.live(service, now) for service in self.table.services(now)}

    def _publish(self) -> None:
        changes = self.table.changed(self._time.now())
        if changes:
            self._watchers.publish(changes)

    def _heard(self, instance: Instance) -> None:
        """The log acknowledged `instance`'s record: it is live as of now, whether or not this
        process's own reader has read the record back yet."""
        now = self._time.now()
        self.table.upsert(instance, heard=now, received=now)
        self._publish()

    async def _write(self, key: str, value: bytes | None, timeout: float | None = None) -> None:
        """Write and wait for the acknowledgement, up to the TTL: a heartbeat older than that
        is worth nothing."""
        limit = self.ttl if timeout is None else min(timeout, self.ttl)
        try:
            async with asyncio.timeout(limit):
                await self._log.write(key, value)
        except TimeoutError:
            raise RegistryError(f"no acknowledgement within {limit:g}s") from None

    def apply(self, records: list[LogRecord], *, replayed: bool) -> None:
        """Apply records read from the log; a record that cannot be read is skipped."""
        now, wall = self._time.now(), self._wall()
        for record in records:
            try:
                meaning = decode(record.key, record.value)
            except RecordError as exc:
                # Once per key until it reads again: an instance of a newer release heartbeats
                # every few seconds, and each reader would repeat the same line for each beat.
                if record.key not in self._unreadable:
                    self._unreadable.add(record.key)
                    log.warning("registry: skipping a record: %s", exc)
                continue
            self._unreadable.discard(record.key)
            if isinstance(meaning, Tombstone):
                if self.trust is not None:
                    self.trust.buried(meaning.instance_id)
                if self._instance is None or meaning.instance_id != self._instance.instance_id:
                    self.table.remove(meaning.instance_id)
                continue  # this process's own instance lives on: its next heartbeat says so
            if self.trust is not None and record.value is not None:
                try:
                    self.trust.admit(meaning, record.value, record.timestamp_ms)
                except RecordRefusedError as refused:
                    self._refused(record.key, refused)
                    continue
                self._warned.pop(record.key, None)
            heard = heard_at(now, replayed=replayed, wall_now=wall,
                             timestamp_ms=record.timestamp_ms)
            self.table.upsert(meaning, heard=heard, received=now)
        if records and self.trust is not None:
            self.trust.forget_expired()
        self._publish()

    def _refused(self, key: bytes | None, refused: RecordRefusedError) -> None:
        """Log a refusal once per instance id and reason until a record of it is believed:
        a rogue writer heartbeats too, and each beat would repeat the line."""
        if refused.reason == "stale":  # history: the instance's last words, long ago
            log.debug("registry: skipping an expired record: %s", refused)
        elif refused.reason not in self._warned.setdefault(key, set()):
            if len(self._warned) > 10_000:  # a writer cycling keys: forget, warn again
                self._warned = {key: set()}
            self._warned[key].add(refused.reason)
            log.warning("registry: REFUSED a record (%s): %s", refused.reason, refused)

    async def _read_forever(self) -> None:
        while True:
            replayed = not self._caught_up.is_set()
            try:
                records = await self._log.read()
            except Exception as exc:  # a dependency away: log once, keep trying
                if self._read_error is None:
                    log.warning("registry: reading the log failed, retrying: %s", exc)
                self._read_error = str(exc) or type(exc).__name__
                self._time.lost()
                await asyncio.sleep(READ_RETRY)
                continue
            if records:
                self._time.contact()
            if self._read_error is not None:
                log.info("registry: reading the log again")
                self._read_error = None
            self.apply(records, replayed=replayed)
            if replayed and self._log.caught_up:
                self._caught_up.set()

    async def _sweep_forever(self) -> None:
        await periodically(self._sweep, self.tick, first="after_interval", report="streak",
                           log=log, failed="registry: the sweep failed",
                           resumed="registry: sweeping again")

    async def _sweep(self) -> None:
        await self._probe()
        self._publish()
        if self._caught_up.is_set():
            await self._bury()

    async def _probe(self) -> None:
        """Ask the log whether it is there; while it is not, the table's clock stands still
        (see `PausingClock`)."""
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self._log.ping()
        except Exception as exc:
            if self._time.in_contact:
                log.warning("registry: the log is out of reach (%s); keeping every instance "
                            "as it was until it is back", exc or "no answer")
            self._time.lost()
            return
        if not self._time.in_contact:
            log.info("registry: the log is back")
        self._time.contact()

    async def _bury(self) -> None:
        """Tombstone the instances silent past the grace period, so the compacted log does
        not keep one record for every instance that ever crashed."""
        own = self._instance.instance_id if self._instance is not None else None
        for instance_id in self.table.dead(self._time.now(), spare=own):
            try:
                await self._write(instance_id, None)
            except RegistryError as exc:
                log.warning("registry: could not write the tombstone of %s: %s", instance_id,
                            exc)
                return  # the log is away: the next sweep tries again
            log.info("registry: %s was silent past the grace period; tombstone written",
                     instance_id)
            self.table.remove(instance_id)

    async def _beat_forever(self) -> None:
        await periodically(
            self._beat, self.heartbeat_interval, first="after_interval", report="streak",
            errors=(RegistryError,), log=log, level=logging.WARNING, traceback=False,
            failed=f"registry: heartbeat failed, retrying every {self.heartbeat_interval:g}s",
            resumed="registry: heartbeats resumed")

    async def _beat(self) -> None:
        """One heartbeat; an error nobody expected is reported as a failed beat (named by its
        type) and the next beat is tried: ending the heartbeats would age a live instance out
        of every caller's table, and its deregistration would raise the error again."""
        try:
            await self.heartbeat()
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(f"{type(exc).__name__}: {exc}") from exc

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks[name] = asyncio.create_task(work, name=f"registry-{name}")

    async def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait(task)


