"""What one run measured, the ratios against the others, and the targets verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any

from bench.bus.runner import ConsumeResult, LatencyResult, PublishResult, RecordSize


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    title: str
    short: str
    unit: str
    higher_is_better: bool


METRICS = (
    Metric("publish", "publish throughput", "publish", "msg/s", True),
    Metric("consume", "consume + handle throughput", "consume", "msg/s", True),
    Metric("latency_p50", "end-to-end latency p50", "e2e p50", "ms", False),
    Metric("latency_p99", "end-to-end latency p99", "e2e p99", "ms", False),
)

FRAMEWORK_FACTOR = 2.0
RAW_FRACTION = 0.8


@dataclass
class ContenderRun:
    key: str
    label: str
    notes: str
    publish: list[PublishResult] = field(default_factory=list)
    """One sample per round; the table shows the median rate."""
    consume: list[ConsumeResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        """The median over rounds; None if any round of this metric failed."""
        if metric.split("_")[0] in self.errors:
            return None
        if metric == "publish":
            return median([r.rate for r in self.publish]) if self.publish else None
        if metric == "consume":
            return median([r.rate for r in self.consume]) if self.consume else None
        if not self.latency:
            return None
        if metric == "latency_p50":
            return median([r.summary.p50_ms for r in self.latency])
        if metric == "latency_p99":
            return median([r.summary.p99_ms for r in self.latency])
        raise KeyError(metric)

    @property
    def record(self) -> RecordSize | None:
        return next((r.record for r in self.consume if r.record is not None), None)


def ratio(a: float | None, b: float | None) -> float | None:
    """core / other as printed in the table, whatever the direction of the metric."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def advantage(metric: Metric, core: float | None, other: float | None) -> float | None:
    """How many times better core is than `other` (>1: core better), in either direction."""
    if core is None or other is None or core == 0 or other == 0:
        return None
    return core / other if metric.higher_is_better else other / core


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    metric: Metric
    achieved: float | None
    """core's advantage factor over the reference (see `advantage`)."""
    required: float
    reference: str

    @property
    def status(self) -> str:
        if self.achieved is None:
            return "N/A"
        return "PASS" if self.achieved >= self.required else "MISS"


def verdicts(runs: dict[str, ContenderRun], core: str, framework: str,
             raw: tuple[str, ...], typed: str) -> list[Verdict]:
    """Per metric: core ≥ 80% of the typed floor, ≥ 2x the framework, and ≥ 80% of the best
    raw client."""
    out = []
    for metric in METRICS:
        core_value = runs[core].value(metric.key) if core in runs else None
        floor = runs.get(typed)
        out.append(Verdict(
            target=f"core ≥ {RAW_FRACTION:.0%} of typed raw", metric=metric,
            achieved=advantage(metric, core_value, floor.value(metric.key) if floor else None),
            required=RAW_FRACTION, reference=floor.label if floor else typed,
        ))
        fw = runs.get(framework)
        out.append(Verdict(
            target=f"core ≥ {FRAMEWORK_FACTOR:g}x FastStream", metric=metric,
            achieved=advantage(metric, core_value, fw.value(metric.key) if fw else None),
            required=FRAMEWORK_FACTOR, reference=fw.label if fw else framework,
        ))
        raw_values = {k: runs[k].value(metric.key) for k in raw if k in runs}
        measured = {k: v for k, v in raw_values.items() if v is not None}
        best: str | None = None
        if measured and len(measured) == len(raw):
            pick = max if metric.higher_is_better else min
            best = pick(measured, key=lambda k: measured[k])
        out.append(Verdict(
            target=f"core ≥ {RAW_FRACTION:.0%} of fastest raw", metric=metric,
            achieved=advantage(metric, core_value, measured[best]) if best else None,
            required=RAW_FRACTION, reference=runs[best].label if best else "raw clients",
        ))
    return out


def to_json(runs: dict[str, ContenderRun], found: list[Verdict],
            meta: dict[str, Any]) -> dict[str, Any]:
    contenders: dict[str, Any] = {}
    for key, run in runs.items():
        entry: dict[str, Any] = {"label": run.label, "notes": run.notes, "errors": run.errors}
        entry["metrics"] = {m.key: run.value(m.key) for m in METRICS}
        entry["publish_rounds"] = [{"rate": r.rate, "seconds": r.seconds} for r in run.publish]
        entry["consume_rounds"] = [
            {"rate": r.rate, "seconds": r.seconds, "join_seconds": r.join_seconds}
            for r in run.consume
        ]
        record = run.record
        entry["record_bytes"] = None if record is None else {
            "value": record.value, "headers": record.headers,
            "header_count": record.header_count, "total": record.total,
        }
        entry["latency_rounds"] = [
            {"count": r.summary.count, "p50_ms": r.summary.p50_ms, "p90_ms": r.summary.p90_ms,
             "p99_ms": r.summary.p99_ms, "max_ms": r.summary.max_ms,
             "mean_ms": r.summary.mean_ms, "achieved_rate": r.achieved_rate, "lost": r.lost}
            for r in run.latency
        ]
        contenders[key] = entry
    return {
        **meta,
        "contenders": contenders,
        "verdicts": [
            {"target": v.target, "metric": v.metric.key, "reference": v.reference,
             "achieved_factor": v.achieved, "required_factor": v.required, "status": v.status}
            for v in found
        ],
    }
