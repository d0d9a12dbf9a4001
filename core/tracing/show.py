"""A trace as a tree, for a terminal: each span under its parent, with its service, kind,
duration and status; spans whose parent is not in the files hang from the top."""

from __future__ import annotations

from collections.abc import Sequence

from rich.tree import Tree

from core.tracing.files import SpanRecord

__all__ = ["trace_tree"]


def trace_tree(spans: Sequence[SpanRecord]) -> Tree:
    """The spans of one trace as a rich `Tree`, children in start order."""
    ids = {span.span_id for span in spans}
    children: dict[str | None, list[SpanRecord]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    trace_id = spans[0].trace_id if spans else "?"
    root = Tree(f"trace [bold]{trace_id}[/]: {len(spans)} spans")
    start = min((s.start_ns for s in spans), default=0)

    def add(node: Tree, parent: str | None) -> None:
        for span in children.get(parent, []):
            add(node.add(_label(span, start)), span.span_id)

    add(root, None)
    return root


def _label(span: SpanRecord, start: int) -> str:
    status = "[red]ERROR[/]" if span.status == "ERROR" else ""
    return (f"[bold]{span.name}[/] [dim]{span.kind.lower()}[/] [cyan]{span.service}[/] "
            f"+{(span.start_ns - start) / 1e6:.1f}ms {span.duration_ms:.1f}ms {status}"
            ).rstrip()
