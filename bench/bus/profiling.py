"""Profile the core bus where the benchmark says it is slow: `python -m bench.bus.profiling`.

Runs the same publish and consume measurements as `python -m bench.bus` for the core contender
only, each under cProfile (the event-loop thread, where the Python overhead lives), and
prints the top functions by own time and by cumulative time. Stats files are kept in .cache/.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from bench.bus.contenders.core_bus import CoreContender
from bench.bus.runner import Runner, Settings

OUT_DIR = Path(".cache")


def _report(profile: cProfile.Profile, name: str, top: int) -> str:
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"profile-core-{name}.pstats"
    profile.dump_stats(path)
    buf = io.StringIO()
    stats = pstats.Stats(profile, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return f"stats saved to {path}\n{buf.getvalue()}"


async def _run(settings: Settings, what: list[str], top: int) -> None:
    runner = Runner(settings)
    core = CoreContender(settings.bootstrap_servers, settings.payload_size)
    await runner.publish(core, count=min(5_000, settings.messages), metric="warmup")
    for name in what:
        profile = cProfile.Profile()
        method = getattr(runner, name)
        if name == "consume":
            # Profile only the consuming part: pre-produce outside the profiler.
            result = await _profiled_consume(runner, core, profile)
        else:
            profile.enable()
            started = time.perf_counter()
            result = await method(core)
            profile.disable()
            print(f"{name}: {time.perf_counter() - started:.2f}s under the profiler")
        print(f"=== core {name} (profiled, so slower than in the bench): {result}")
        print(_report(profile, name, top))


async def _profiled_consume(runner: Runner, core: CoreContender,
                            profile: cProfile.Profile) -> object:
    original = core.start_consumer

    async def start_consumer(*args: object, **kwargs: object) -> None:
        profile.enable()
        await original(*args, **kwargs)  # type: ignore[arg-type]

    core.start_consumer = start_consumer  # type: ignore[method-assign]
    try:
        return await runner.consume(core)
    finally:
        profile.disable()
        core.start_consumer = original  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus.profiling")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--what", default="publish,consume,latency")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    os.environ.setdefault("KFM_KAFKA_JAVA_OPTS", "-XX:TieredStopAtLevel=4 -Xmx1g")
    from devinfra.kafka import KafkaBroker

    with KafkaBroker.start() as broker:
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers, messages=args.messages,
            payload_size=512, latency_messages=2_000, latency_warmup=200, interval_ms=2.0,
            partitions=3, run_id=uuid.uuid4().hex[:8],
        )
        asyncio.run(_run(settings, args.what.split(","), args.top))


if __name__ == "__main__":
    main()
