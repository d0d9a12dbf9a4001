"""The event loop's own CPU per consumed record, without a broker: `python -m bench.bus.loop_cpu`.

The same N messages (confluent-kafka `Message`s built in memory, as `bench.bus` publishes
them) go through typed raw's per-record work (`model_validate_json` and the handler) and
through `EventConsumer`'s batch intake, lanes, dispatch and inbox, in batches of 500 as
polls bring them. Timed with `time.process_time`, best of `--rounds`: steadier than the
broker runs on a shared machine, and it isolates what the consumer's Python costs (the
broker runs add the client thread and librdkafka, which both contenders pay).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Sequence

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from bench.common.payload import BenchEvent, Payload, make_blob, now_ns
from core.config import KafkaConfig
from core.messaging.consumer import EventConsumer
from core.messaging.serialization import EventRegistry, EventSerializer
from core.messaging.types import MessageRecord

BATCH = 500
PARTITIONS = 3


def messages(count: int, size: int) -> list[Message]:
    registry = EventRegistry()
    registry.register(BenchEvent)
    serializer, blob = EventSerializer(registry), make_blob(size)
    out = []
    for seq in range(count):
        value, event_headers = serializer.serialize(
            BenchEvent(data=Payload(seq=seq, sent_ns=now_ns(), blob=blob)))
        headers: list[tuple[str, str | bytes | None]] = list(event_headers)
        out.append(Message(topic="bench", partition=seq % PARTITIONS,
                           offset=seq // PARTITIONS, value=value, headers=headers,
                           timestamp=(TIMESTAMP_CREATE_TIME, 1)))
    return out


def typed_raw(msgs: list[Message]) -> float:
    seen: set[int] = set()

    async def handle(value: bytes | None) -> None:
        seen.add(BenchEvent.model_validate_json(value or b"").data.seq)

    async def run() -> float:
        started = time.process_time()
        for msg in msgs:
            if msg.error() is None:
                await handle(msg.value())
        return time.process_time() - started

    return asyncio.run(run())


def core(msgs: list[Message], profile: cProfile.Profile | None = None) -> float:
    seen: set[int] = set()

    async def handle(event: BenchEvent) -> None:
        seen.add(event.data.seq)

    async def run() -> float:
        consumer = EventConsumer(KafkaConfig("unused:9092", "bench", "bench"),
                                 producer=None)  # type: ignore[arg-type]  # no dead letters
        consumer.events.register(BenchEvent)
        consumer.subscribe("bench", handle)
        consumer._owned.update(("bench", p) for p in range(PARTITIONS))
        if profile is not None:
            profile.enable()
        started = time.process_time()
        of = MessageRecord.of
        for first in range(0, len(msgs), BATCH):
            consumer._accept([of(m) for m in msgs[first:first + BATCH]])
            await asyncio.sleep(0)  # the lanes run while the next poll is out
            consumer._tracker.take()
        while consumer._workers:
            await asyncio.wait(list(consumer._workers.values()))
        elapsed = time.process_time() - started
        if profile is not None:
            profile.disable()
        if len(seen) != len(msgs):
            raise RuntimeError(f"handled {len(seen)} of {len(msgs)}")
        return elapsed

    return asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus.loop_cpu", description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the core path")
    args = parser.parse_args(argv)
    msgs = messages(args.messages, args.size)
    if args.profile:
        profile = cProfile.Profile()
        core(msgs, profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    typed, ours = [], []
    for _ in range(args.rounds):  # interleaved
        typed.append(typed_raw(msgs))
        ours.append(core(msgs))
    per = 1e6 / args.messages
    t, c = min(typed) * per, min(ours) * per
    print(f"loop CPU per record, best of {args.rounds}: typed raw {t:.2f} µs, core {c:.2f} µs "
          f"(core's extra {c - t:.2f} µs; {t / c:.2f}x of typed raw's CPU)")


if __name__ == "__main__":
    main()
