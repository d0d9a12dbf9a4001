"""What deploy/observability/ asks of the metrics: the known names (metrics.txt) and every
PromQL expression the alert rules and the Grafana dashboards hold, with the metric names each
one reads. The checks of the config (test_observability_config.py) and of a live /metrics use
these, so both judge the same list."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS = OBSERVABILITY / "prometheus"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"
METRICS_FILE = OBSERVABILITY / "metrics.txt"

HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus writes itself for every target."""


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it is written (for failure messages)."""

    where: str
    expr: str


def known_metrics() -> dict[str, str]:
    """metrics.txt as {name: type}."""
    result: dict[str, str] = {}
    for line in METRICS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind = line.split()
            result[name] = kind
    return result


def rule_queries() -> list[Query]:
    queries = []
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                queries.append(Query(f"{path.name}: {name}", rule["expr"]))
    return queries


def dashboards() -> dict[str, dict[str, object]]:
    """Every dashboard JSON file by file name (json.loads raises on an invalid one)."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, object]) -> list[dict[str, object]]:
    """The dashboard's panels, those inside collapsed rows included."""
    result = []
    for panel in board.get("panels", []):  # type: ignore[attr-defined]
        result.append(panel)
        result.extend(panel.get("panels", []))
    return result


_LABEL_VALUES = re.compile(r"label_values\(\s*([^,)]+?)\s*,")


def dashboard_queries() -> list[Query]:
    """Each panel target's expr, and the metric of each `label_values(metric, label)`
    template variable (as a selector, so it parses and names its metric)."""
    queries = []
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):  # type: ignore[attr-defined]
                queries.append(Query(f"{name}: panel {panel['title']!r} {target['refId']}",
                                     target["expr"]))
        for variable in board.get("templating", {}).get("list", []):  # type: ignore[attr-defined]
            query = variable.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            match = _LABEL_VALUES.search(text or "")
            if match:
                queries.append(Query(f"{name}: variable {variable['name']}", match.group(1)))
    return queries


_GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
_GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def plain_promql(expr: str) -> str:
    """`expr` with Grafana's variables replaced by values PromQL accepts (durations for the
    interval variables, a word for the others), so promtool can parse it."""
    for variable, value in _GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    return _GRAFANA_VARIABLE.sub("x", expr)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "offset", "bool", "inf", "nan", "atan2"})


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: identifiers that are not functions, keywords, label
    names (in matchers or grouping) nor parts of strings and durations."""
    text = _STRINGS.sub('""', plain_promql(expr))
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def unknown_names(names: set[str], known: dict[str, str]) -> set[str]:
    """The names that are neither a known metric, one of a histogram's series (only those:
    a histogram has no series under its bare name), nor Prometheus's own."""
    bad = set()
    for name in names:
        if name in PROMETHEUS_OWN or (name in known and known[name] != "histogram"):
            continue
        base = next((name.removesuffix(s) for s in HISTOGRAM_SERIES if name.endswith(s)), None)
        if base is not None and known.get(base) == "histogram":
            continue
        bad.add(name)
    return bad


def queried_metrics() -> set[str]:
    """Every metric of metrics.txt that a rule or a dashboard reads (a histogram by its base
    name): what a live /metrics must expose for the dashboards to show something."""
    names: set[str] = set()
    for query in rule_queries() + dashboard_queries():
        for name in metric_names(query.expr):
            base = next((name.removesuffix(s) for s in HISTOGRAM_SERIES if name.endswith(s)),
                        name)
            names.add(base if base in known_metrics() else name)
    return names - PROMETHEUS_OWN
