"""The three measurements, each on a fresh topic, driven identically for every contender."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.bus.contenders import Contender
from bench.common.kafka import wait_for_leaders
from bench.common.stats import LatencySummary, rate, span_rate
from core.config import KafkaConfig
from core.messaging.kafka_client import KafkaAdmin

PROBE_SEQ = -1


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str
    messages: int
    payload_size: int
    latency_messages: int
    latency_warmup: int
    interval_ms: float
    partitions: int
    run_id: str


@dataclass(frozen=True, slots=True)
class RecordSize:
    value: int
    headers: int
    header_count: int

    @property
    def total(self) -> int:
        return self.value + self.headers


@dataclass(frozen=True, slots=True)
class PublishResult:
    rate: float
    seconds: float


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    rate: float
    seconds: float
    join_seconds: float
    record: RecordSize | None


@dataclass(frozen=True, slots=True)
class LatencyResult:
    summary: LatencySummary
    achieved_rate: float
    lost: int


class Runner:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._admin = KafkaAdmin(KafkaConfig(bootstrap_servers=settings.bootstrap_servers,
                                             client_id="bench-admin", consumer_group="unused"))
        self._filled: dict[str, tuple[str, RecordSize | None]] = {}
        self._metadata = AdminClient({"bootstrap.servers": settings.bootstrap_servers,
                                      "client.id": "bench-metadata"})

    async def fresh_topic(self, contender: Contender, metric: str) -> str:
        """A new topic whose partitions all have a leader, so no client starts with
        NOT_LEADER retries (aiokafka would otherwise back off 100 ms on its first batch)."""
        topic = f"bench-{self.s.run_id}-{contender.key}-{metric}"
        await self._admin.create_topics([topic], partitions=self.s.partitions,
                                        replication_factor=1)
        await asyncio.to_thread(wait_for_leaders, self._metadata, topic, self.s.partitions)
        return topic

    async def publish(self, contender: Contender, count: int | None = None,
                      metric: str = "publish") -> PublishResult:
        """Time from the first publish call until the last acknowledgement (acks=all).
        One record is published and acknowledged before the clock starts, so connection
        and metadata set-up are not counted."""
        n = count or self.s.messages
        topic = await self.fresh_topic(contender, metric)
        await contender.start_producer()
        try:
            await (await contender.send(topic, PROBE_SEQ))
            started = time.perf_counter()
            await contender.publish_all(topic, n)
            seconds = time.perf_counter() - started
        finally:
            await contender.stop_producer()
        return PublishResult(rate(n, seconds), seconds)

    async def _filled_topic(self, contender: Contender) -> tuple[str, RecordSize | None]:
        """The contender's consume topic: N records published once with its own publisher
        (after one probe record, so leadership is settled), reused by every round."""
        if contender.key in self._filled:
            return self._filled[contender.key]
        topic = await self.fresh_topic(contender, "consume")
        await contender.start_producer()
        try:
            await (await contender.send(topic, PROBE_SEQ))
            await contender.publish_all(topic, self.s.messages)
        finally:
            await contender.stop_producer()
        record = await asyncio.to_thread(sample_record, self.s.bootstrap_servers, topic,
                                       self.s.partitions)
        self._filled[contender.key] = (topic, record)
        return topic, record

    async def consume(self, contender: Contender, metric: str = "consume") -> ConsumeResult:
        """Consume N pre-produced records with a trivial handler in a new consumer group;
        the rate is measured from the first handled record to the last."""
        n = self.s.messages
        topic, record = await self._filled_topic(contender)
        seen: set[int] = set()
        first_ns = last_ns = 0
        done = asyncio.Event()

        def on_message(seq: int, sent_ns: int) -> None:
            nonlocal first_ns, last_ns
            if seq < 0 or seq in seen:
                return
            now = time.perf_counter_ns()
            if not seen:
                first_ns = now
            seen.add(seq)
            last_ns = now
            if len(seen) >= n:
                done.set()

        started_ns = time.perf_counter_ns()
        await contender.start_consumer(topic, f"{topic}-{metric}", on_message)
        try:
            await asyncio.wait_for(done.wait(), timeout=max(120.0, n / 500))
        except TimeoutError:
            raise RuntimeError(f"consumed only {len(seen)} of {n} records") from None
        finally:
            await contender.stop_consumer()
        return ConsumeResult(
            rate=span_rate(n, first_ns, last_ns), seconds=(last_ns - first_ns) / 1e9,
            join_seconds=(first_ns - started_ns) / 1e9, record=record,
        )

    async def latency(self, contender: Contender, metric: str = "latency") -> LatencyResult:
        """Producer and consumer in this process; records published at a fixed pace; latency
        is handler invocation time minus the time stamped at the publish call."""
        warm, n = self.s.latency_warmup, self.s.latency_messages
        total = warm + n
        interval = self.s.interval_ms / 1000
        topic = await self.fresh_topic(contender, metric)
        latencies: dict[int, int] = {}
        live = asyncio.Event()
        done = asyncio.Event()

        def on_message(seq: int, sent_ns: int) -> None:
            now = time.perf_counter_ns()
            if seq < 0:
                live.set()
            elif seq not in latencies:
                latencies[seq] = now - sent_ns
                if len(latencies) >= total:
                    done.set()

        await contender.start_consumer(topic, f"{topic}-group", on_message)
        await contender.start_producer()
        try:
            await self._until_live(contender, topic, live)
            acks = []
            started = time.perf_counter()
            for i in range(total):
                delay = started + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                acks.append(await contender.send(topic, i))
            sent_seconds = time.perf_counter() - started
            await asyncio.gather(*acks)
            try:
                await asyncio.wait_for(done.wait(), timeout=30)
            except TimeoutError:
                pass
        finally:
            await contender.stop_producer()
            await contender.stop_consumer()
        measured = [v for seq, v in latencies.items() if seq >= warm]
        if not measured:
            raise RuntimeError("no record reached the handler")
        return LatencyResult(
            summary=LatencySummary.of(measured),
            achieved_rate=rate(total, sent_seconds),
            lost=n - len(measured),
        )

    async def _until_live(self, contender: Contender, topic: str, live: asyncio.Event) -> None:
        """Publish probes until the consumer handles one (it joined and fetches), then let
        stragglers drain, so group join time never counts as latency."""
        deadline = time.monotonic() + 60
        while not live.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("consumer did not receive anything within 60s")
            await (await contender.send(topic, PROBE_SEQ))
            try:
                await asyncio.wait_for(live.wait(), timeout=0.5)
            except TimeoutError:
                pass
        await asyncio.sleep(0.5)


def sample_record(bootstrap_servers: str, topic: str, partitions: int) -> RecordSize | None:
    """The size of one record as stored: value bytes and header bytes (names + values)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "bench-sampler",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            raw_headers = msg.headers() or []
            headers = list(raw_headers.items() if isinstance(raw_headers, dict) else raw_headers)
            value: bytes = msg.value() or b""
            return RecordSize(
                value=len(value),
                headers=sum(len(k.encode()) + len(v or b"") for k, v in headers),
                header_count=len(headers),
            )
        return None
    finally:
        consumer.close()
