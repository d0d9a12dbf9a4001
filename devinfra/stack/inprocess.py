"""`python -m devinfra.stack.inprocess PLAN.json`: the stack's services in this one process.

What `make up MODE=monolith` runs (devinfra.stack.monolith writes the plan): every service and
the gateway, each its own app built by its own `create_app` with its own settings object (its
database, consumer group, port, keys), served by its own uvicorn server on its own port, all
on one event loop. They talk as they do as processes: through Kafka, and over loopback HTTP
found through the registry, so the gateway's routes, token checks, rate limits and health
checks apply unchanged (an in-process ASGI transport would have needed a second way to reach
an upstream, kept only for this mode).

Settings: each service's class, read from its own environment (the one the stack would give
its process) merged over this process's, never by changing `os.environ` (shared by all).
Start: in the plan's waves, each ready (`/health/ready`) before the next; stop (SIGTERM,
SIGINT): the waves in reverse, each server draining through its lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from core import logs
from core.config import Settings
from core.logs.formatters import identity_scope
from core.serving import ServerConfig, ServerLimits
from devinfra.stack.monolith import BUSES, MEMORY_BUS_NOT_DURABLE

log = logging.getLogger("monolith")

START_FAILED = 1
REFUSED = 2


@dataclass(frozen=True, slots=True)
class Member:
    """One service of the plan: `module`'s app on `port`, configured by `env`."""

    name: str
    module: str
    port: int
    env: Mapping[str, str]
    ready_path: str = "/health/ready"


def read_plan(path: Path) -> tuple[str, float, list[list[Member]]]:
    """(bus, ready timeout, waves of members) from the JSON the stack wrote."""
    plan = json.loads(path.read_text())
    waves = [[Member(**row) for row in wave] for wave in plan["waves"]]
    return str(plan.get("bus", "kafka")), float(plan.get("ready_timeout", 120)), waves


def settings_class(factory: Any) -> type[Settings]:
    """The settings class `factory(settings=...)` takes (`OrderSettings | None`)."""
    hint = typing.get_type_hints(factory).get("settings")
    for candidate in typing.get_args(hint) or (hint,):
        if isinstance(candidate, type) and issubclass(candidate, Settings):
            return candidate
    raise TypeError(f"{factory.__module__}.{factory.__name__} takes no settings= argument")


def settings_from(cls: type[Settings], env: Mapping[str, str]) -> Settings:
    """`cls` read as it would be in a process whose environment is this one's plus `env`
    (the same parsing: JSON for lists, case-insensitive names, `.env` below it). An instance
    of a subclass of `cls`, so `settings_as(cls)` accepts it."""
    environ = {**os.environ, **env}

    class _Env(EnvSettingsSource):
        def _load_env_vars(self) -> Mapping[str, str | None]:
            return parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty,
                                  self.env_parse_none_str)

    def sources(_: type[BaseSettings], settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
                ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Env(settings_cls), dotenv_settings, file_secret_settings

    scoped = type(cls.__name__, (cls,), {
        "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        "settings_customise_sources": classmethod(sources)})
    made: Settings = scoped()
    return made


def app_factory(module: str) -> Any:
    """`<module>.main:create_app` (a service), else `<module>.app:create_app` (the gateway)."""
    for name in (f"{module}.main", f"{module}.app"):
        try:
            found = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        return found.create_app
    raise ModuleNotFoundError(f"neither {module}.main nor {module}.app has create_app")


class _Server(uvicorn.Server):
    """A server among several in one process: signals are the process's, handled once by
    `Monolith` (uvicorn's own handling would re-raise each signal once per server)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Running:
    """A member built: its settings and its server, and the task serving it once started."""

    member: Member
    settings: Settings
    server: _Server
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.service_host}:{self.settings.service_port}"


def build(member: Member) -> Running:
    """The member's settings, app and (not yet serving) server."""
    factory = app_factory(member.module)
    cfg = settings_from(settings_class(factory), member.env)
    app = factory(cfg)
    gateway = hasattr(cfg, "gateway_max_head_bytes")
    limits = (ServerLimits(max_head_bytes=cfg.gateway_max_head_bytes,  # type: ignore[attr-defined]
                           head_timeout=cfg.gateway_head_timeout)  # type: ignore[attr-defined]
              if gateway else ServerLimits())
    # Services believe the gateway's X-Forwarded-For; the gateway believes no one's.
    forwarding: dict[str, Any] = ({"proxy_headers": False} if gateway else
                                  {"proxy_headers": True,
                                   "forwarded_allow_ips": cfg.forwarded_allow_ips})
    config = ServerConfig(app, server_limits=limits, host=cfg.service_host,
                          port=cfg.service_port, log_config=None, log_level=None,
                          access_log=cfg.access_log, timeout_graceful_shutdown=20,
                          lifespan="on", **forwarding)
    return Running(member, cfg, _Server(config))


class Monolith:
    """The plan's servers on this loop: `run()` starts them wave by wave, serves until a
    signal (or a server ends by itself: a failure), then stops them in reverse."""

    def __init__(self, waves: Sequence[Sequence[Member]], ready_timeout: float) -> None:
        self.waves = [list(wave) for wave in waves]
        self.ready_timeout = ready_timeout
        self.running: list[list[Running]] = []
        self._stop = asyncio.Event()
        self._signals = 0

    def request_stop(self) -> None:
        self._signals += 1
        if self._signals > 1:  # a second signal: stop waiting for connections to finish
            for wave in self.running:
                for one in wave:
                    one.server.force_exit = True
        self._stop.set()

    async def run(self, *, signals: bool = True) -> int:
        """Serve until SIGINT or SIGTERM (`signals`; else until `request_stop()`): 0; a
        service that fails to start or ends by itself: 1, the others stopped in order."""
        if signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        code = 0
        try:
            for wave in self.waves:
                if not await self._start_wave(wave):
                    code = START_FAILED
                    break
            else:
                log.info("all %d services run in this process (pid %d)",
                         sum(len(w) for w in self.running), os.getpid())
                code = await self._serve()
        finally:
            await self._stop_all()
        return code

    async def _start_wave(self, wave: list[Member]) -> bool:
        started = []
        for member in wave:
            try:
                started.append(build(member))
            except Exception:  # a bad setting, a missing module: said, and nothing serves
                log.exception("%s could not be built", member.name)
                return False
        self.running.append(started)
        for one in started:
            one.task = asyncio.create_task(self._serve_one(one), name=f"serve:{one.member.name}")
        return all(await asyncio.gather(*(self._ready(one) for one in started)))

    @staticmethod
    async def _serve_one(one: Running) -> None:
        identity_scope(one.member.name)  # this task's and its children's lines
        try:
            await one.server.serve()
        except SystemExit as exc:  # uvicorn's way to fail a start (lifespan, port): this
            # server's end, not the process's; the others are stopped in order
            log.error("%s failed to start (exit %s)", one.member.name, exc.code)

    async def _ready(self, one: Running) -> bool:
        """Wait until `one` answers its readiness 200; False if it ends, times out or a stop
        is asked for first."""
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline and not self._stop.is_set():
                assert one.task is not None
                if one.task.done():
                    log.error("%s stopped before it was ready", one.member.name)
                    return False
                if one.server.started:
                    try:
                        answer = await client.get(one.url + one.member.ready_path)
                        if answer.status_code == 200:
                            return True
                        last = f"{answer.status_code} {answer.text[:300]}"
                    except httpx.HTTPError as exc:
                        last = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.2)
        if not self._stop.is_set():
            log.error("%s not ready after %.0fs (last answer: %s)", one.member.name,
                      self.ready_timeout, last)
        return False

    async def _serve(self) -> int:
        """Until a stop is asked for (0), or a server ends by itself (1)."""
        tasks = {one.task for wave in self.running for one in wave if one.task is not None}
        stopping = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            return 0
        stopping.cancel()
        ended = [t.get_name() for t in done]
        log.error("%s ended by itself: stopping the others", ", ".join(ended))
        return START_FAILED

    async def _stop_all(self) -> None:
        """Dependents first, as the stack stops processes: the gateway, then the services,
        auth last (the others verify tokens with its keys until they stop)."""
        for wave in reversed(self.running):
            names = ", ".join(one.member.name for one in wave)
            log.info("stopping %s", names)
            for one in wave:
                one.server.should_exit = True
            await asyncio.gather(*(one.task for one in wave if one.task is not None),
                                 return_exceptions=True)
        self.running.clear()


def refusal(bus: str, waves: Sequence[Sequence[Member]]) -> str | None:
    """Why the plan cannot run, if it cannot: an unknown bus, or a memory bus some member is
    not on (it would reach for a broker that is not there, or split the system in two)."""
    if bus not in BUSES:
        return f"BUS={bus}: one of {', '.join(BUSES)}"
    if bus == "memory":
        elsewhere = [m.name for wave in waves for m in wave
                     if not m.env.get("KAFKA_BOOTSTRAP_SERVERS", "").startswith("memory://")]
        if elsewhere:
            return (f"BUS=memory, but {', '.join(elsewhere)} would not use it: every member's "
                    "KAFKA_BOOTSTRAP_SERVERS must be a memory:// address")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m devinfra.stack.inprocess PLAN.json", file=sys.stderr)
        return REFUSED
    bus, ready_timeout, waves = read_plan(Path(args[0]))
    refused = refusal(bus, waves)
    if refused:  # before anything is imported or configured
        print(refused, file=sys.stderr)
        return REFUSED
    base = settings_from(Settings, {})
    logs.configure_logging(logs.LogSettings(level=base.log_level, format=base.log_format))
    logs.identify("monolith")
    if bus == "memory":
        log.warning(MEMORY_BUS_NOT_DURABLE)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a locked dependency; asyncio's loop serves too
        return asyncio.run(Monolith(waves, ready_timeout).run())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(Monolith(waves, ready_timeout).run())


def exit_now(code: int) -> None:
    """Leave without waiting for library threads: every service has stopped through its
    lifespan by now, but one whose start failed halfway leaves client threads (Kafka's,
    aiosqlite's) that would keep the interpreter waiting for ever."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
