"""The printed tables: results with ratios, targets verdicts, and a legend."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.bus.results import METRICS, ContenderRun, Metric, Verdict, ratio
from bench.bus.runner import Settings


def _value(metric: Metric, value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if metric.unit == "msg/s" else f"{value:,.2f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def results_table(runs: dict[str, ContenderRun], core: str, others: Sequence[str]) -> Table:
    order = [core, *others]
    table = Table(title="Kafka client benchmark: same broker, same machine, one run",
                  title_style="bold", header_style="bold")
    table.add_column("metric")
    for key in order:
        table.add_column(runs[key].label, justify="right")
    for key in others:
        table.add_column(f"{runs[core].label} / {runs[key].label}", justify="right",
                         style="cyan")
    for metric in METRICS:
        arrow = "↑" if metric.higher_is_better else "↓"
        row = [f"{metric.short} ({metric.unit}) {arrow}"]
        row += [_value(metric, runs[k].value(metric.key)) for k in order]
        core_value = runs[core].value(metric.key)
        row += [_ratio(ratio(core_value, runs[k].value(metric.key))) for k in others]
        table.add_row(*row)
    return table


def verdict_table(found: list[Verdict]) -> Table:
    targets = list(dict.fromkeys(v.target for v in found))
    table = Table(title="Targets (honest: measured factor vs required)", title_style="bold",
                  header_style="bold")
    table.add_column("metric")
    for target in targets:
        table.add_column(target)
    for metric in METRICS:
        cells: list[Text | str] = [metric.short]
        for target in targets:
            v = next(x for x in found if x.metric == metric and x.target == target)
            style = {"PASS": "bold green", "MISS": "bold red"}.get(v.status, "yellow")
            detail = ("" if v.achieved is None
                      else f" {v.achieved:.2f}x vs {v.reference} (need {v.required:g}x)")
            cells.append(Text(v.status, style=style) + Text(detail))
        table.add_row(*cells)
    return table


def legend(console: Console, runs: dict[str, ContenderRun], settings: Settings,
           rounds: int) -> None:
    s = settings
    console.print(
        f"[bold]Legend[/]\n"
        f"• ↑ higher is better (msg/s), ↓ lower is better (ms). Ratio columns are always "
        f"core / other: for throughput > 1 means core is faster; for latency < 1 means core "
        f"is faster.\n"
        f"• Producers: acks=all, idempotent, linger 5 ms, no compression; topics: "
        f"{s.partitions} partitions, RF 1, a fresh topic per contender, metric and round.\n"
        f"• publish: {s.messages:,} records, pipelined, clock stops at the last ack. "
        f"consume: {s.messages:,} records pre-produced once per contender, consumed by a new "
        f"group each round, first→last handled record (group join excluded). "
        f"latency: {s.latency_messages:,} records "
        f"(+{s.latency_warmup} warm-up, discarded) one every {s.interval_ms:g} ms, publish "
        f"call → handler, producer and consumer in one process. Every value is the median of "
        f"{rounds} interleaved round(s) (all rounds are in the JSON).\n"
        f"• Payload: {s.payload_size} B of JSON data (seq, sent_ns, blob) for everyone; "
        f"frameworks add their envelope/headers. Record size as stored (value + headers):"
    )
    for run in runs.values():
        record = run.record
        size = ("unknown" if record is None else
                f"{record.total} B = value {record.value} B + {record.header_count} headers "
                f"{record.headers} B")
        console.print(f"    {run.label}: {size}")
        console.print(f"      [dim]{run.notes}[/]")
    for run in runs.values():
        for metric, error in run.errors.items():
            console.print(f"[red]• {run.label} {metric} failed: {error}[/]")
