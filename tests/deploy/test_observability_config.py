"""deploy/observability/ is valid for the tools that read it: promtool checks the Prometheus
config and rules and runs the alerts' unit tests, amtool checks the Alertmanager config and
its routes, every dashboard is JSON whose queries parse and name only the metrics of
metrics.txt, and the collector, Filebeat, Elasticsearch and Kibana files hang together.

promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages
(scripts/bootstrap.sh installs them); a missing tool fails these tests, it never skips them."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devinfra.prometheus import local_config, write_targets
from tests.deploy.queries import (
    DASHBOARDS,
    OBSERVABILITY,
    PROMETHEUS,
    Query,
    dashboard_queries,
    dashboards,
    known_metrics,
    metric_names,
    panels,
    plain_promql,
    queried_metrics,
    rule_queries,
    unknown_names,
)

ALERTMANAGER = OBSERVABILITY / "alertmanager" / "alertmanager.yml"
GRAFANA = OBSERVABILITY / "grafana" / "provisioning"
ELK = OBSERVABILITY / "elk"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} not found: run scripts/bootstrap.sh (Debian's prometheus packages)"
    return found


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a tool; fail the test with its whole output unless it exits 0."""
    result = subprocess.run([str(arg) for arg in argv], cwd=cwd, capture_output=True,
                            text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{output}"
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule
            for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
            for group in load_yaml(path)["groups"]
            for rule in group["rules"] if "alert" in rule}


# --- Prometheus ------------------------------------------------------------------------------


def test_promtool_checks_the_scrape_config_and_its_rules() -> None:
    output = run(tool("promtool"), "check", "config", PROMETHEUS / "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in output


def test_promtool_checks_the_config_as_make_up_writes_it(tmp_path: Path) -> None:
    """The copy devinfra.prometheus runs (short intervals, absolute rule paths) with a
    discovery file written: valid, the rules found, the targets file read."""
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local_config(PROMETHEUS, "1s")))
    write_targets(tmp_path / "targets" / "kfm.json", {"gateway": ["127.0.0.1:8000"]})
    output = run(tool("promtool"), "check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS: 1 rule files found" in output
    assert "targets/*.json" not in output  # no warning: the file is there


def test_promtool_checks_the_rules() -> None:
    rules = sorted((PROMETHEUS / "rules").glob("*.yml"))
    output = run(tool("promtool"), "check", "rules", *rules)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_runs_the_alerts_unit_tests() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    output = run(tool("promtool"), "test", "rules", *tests, cwd=PROMETHEUS)
    assert "SUCCESS" in output


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(alert_rules())
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


def test_the_alert_tests_feed_only_known_series() -> None:
    known = known_metrics()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for case in load_yaml(path)["tests"]:
            for series in case.get("input_series", []):
                names = metric_names(series["series"])
                assert unknown_names(names, known) == set(), series["series"]


def test_the_brief_s_alerts_exist_with_a_severity_and_a_summary() -> None:
    rules = alert_rules()
    for name in ("KfmConsumerLagGrowing", "KfmDeadLettersGrowing", "KfmHttpErrorRate",
                 "KfmCircuitBreakerOpen", "KfmOutboxOldestAgeHigh", "KfmSagaNeedsAttention",
                 "KfmInstanceDown", "KfmServiceMissing"):
        assert name in rules
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"page", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


# --- Alertmanager ----------------------------------------------------------------------------


def test_amtool_checks_the_alertmanager_config() -> None:
    output = run(tool("amtool"), "check-config", ALERTMANAGER)
    assert "SUCCESS" in output


@pytest.mark.parametrize(("severity", "receiver"), [("page", "on-call"), ("warning", "team")])
def test_each_severity_reaches_its_receiver(severity: str, receiver: str) -> None:
    alerts = [name for name, rule in alert_rules().items()
              if rule["labels"]["severity"] == severity]
    assert alerts
    for name in alerts:
        output = run(tool("amtool"), "config", "routes", "test",
                     f"--config.file={ALERTMANAGER}", f"alertname={name}",
                     f"severity={severity}", "service=user")
        assert output.split("\n")[0].strip() == receiver, (name, output)


def test_inhibitions_name_real_alerts() -> None:
    alerts = set(alert_rules())
    for rule in load_yaml(ALERTMANAGER)["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            names = re.fullmatch(r'alertname=~?"?([^"]+)"?', matcher)
            assert names, matcher
            assert set(names.group(1).split("|")) <= alerts, matcher


# --- Grafana ---------------------------------------------------------------------------------


def datasource_uids() -> dict[str, str]:
    config = load_yaml(GRAFANA / "datasources" / "datasources.yml")
    return {source["uid"]: source["type"] for source in config["datasources"]}


def test_dashboards_are_valid_json_with_unique_uids() -> None:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert {path.name for path in files} == {"service-overview.json", "kafka-flow.json",
                                             "gateway.json"}
    boards = dashboards()  # json.loads on each: raises on invalid JSON
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["title"] and board["schemaVersion"], name
        ids = [panel["id"] for panel in panels(board)]
        assert len(set(ids)) == len(ids), f"{name}: panel ids repeat"


def test_every_panel_queries_a_provisioned_prometheus() -> None:
    sources = datasource_uids()
    for name, board in dashboards().items():
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel.get("targets"), f"{name}: {panel['title']} has no query"
            for item in (panel, *panel["targets"]):
                source = item["datasource"]
                assert sources.get(source["uid"]) == source["type"] == "prometheus", \
                    f"{name}: {panel['title']}: {source}"


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool has no expression checker; a rules file with each query as a recording rule
    makes `promtool check rules` parse them all (and name the failing one)."""
    queries = dashboard_queries()
    rules = [{"record": f"dashboard_query_{number}", "expr": plain_promql(query.expr)}
             for number, query in enumerate(queries)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([tool("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        failing = [f"{query.where}: {query.expr}" for number, query in enumerate(queries)
                   if f'"dashboard_query_{number}"' in result.stdout + result.stderr]
        pytest.fail(f"{result.stdout}{result.stderr}\n" + "\n".join(failing))
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_a_broken_query_fails_the_parse_check(tmp_path: Path) -> None:
    """The check above can fail: promtool refuses an expression with a missing bracket."""
    path = tmp_path / "broken.yml"
    broken = plain_promql("sum(rate(kfm_http_requests_total[$__rate_interval])")
    path.write_text(yaml.safe_dump(
        {"groups": [{"name": "g", "rules": [{"record": "broken", "expr": broken}]}]}))
    result = subprocess.run([tool("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0


def test_queries_name_only_the_known_metrics() -> None:
    known = known_metrics()
    queries: list[Query] = rule_queries() + dashboard_queries()
    unknown = {query.where: unknown_names(metric_names(query.expr), known) for query in queries}
    assert {where: names for where, names in unknown.items() if names} == {}
    nameless = [query.where for query in queries if not metric_names(query.expr)]
    assert nameless == []


def test_every_listed_metric_is_on_a_dashboard() -> None:
    shown = {name for query in dashboard_queries() for name in metric_names(query.expr)}
    missing = [name for name, kind in known_metrics().items()
               if (f"{name}_bucket" if kind == "histogram" else name) not in shown]
    assert missing == []
    assert queried_metrics() == set(known_metrics())


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (service, le) (rate(kfm_x_bucket{route="/a/{id}", le="+Inf"}[5m])) > bool 1',
     {"kfm_x_bucket"}),
    ("histogram_quantile(0.95, sum by (le) (rate(a_b[$__rate_interval]))) / on (job) c",
     {"a_b", "c"}),
    ('absent(up{job="kfm"}) or vector(1e3) unless ignoring (instance) d offset 5m', {"up", "d"}),
    ("kfm_a{route=~\"/api/(users|x)\"} * on () group_left (version) kfm_b", {"kfm_a", "kfm_b"}),
])
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_histogram_is_read_through_its_series_only() -> None:
    known = {"kfm_h_seconds": "histogram", "kfm_c_total": "counter"}
    assert unknown_names({"kfm_h_seconds_bucket", "kfm_h_seconds_count", "kfm_c_total", "up"},
                         known) == set()
    assert unknown_names({"kfm_h_seconds", "kfm_c_total_bucket", "kfm_typo_total"},
                         known) == {"kfm_h_seconds", "kfm_c_total_bucket", "kfm_typo_total"}


def test_the_metrics_list_is_well_formed() -> None:
    known = known_metrics()
    assert len(known) >= 20
    for name, kind in known.items():
        assert re.fullmatch(r"kfm_[a-z0-9_]+", name), name
        assert kind in {"counter", "gauge", "histogram"}, name
        assert name.endswith("_total") == (kind == "counter"), name


def test_the_dashboards_provider_serves_the_dashboards_folder() -> None:
    config = load_yaml(GRAFANA / "dashboards" / "dashboards.yml")
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# --- traces and logs -------------------------------------------------------------------------


def test_the_collector_pipelines_use_only_defined_components() -> None:
    config = load_yaml(OBSERVABILITY / "otel-collector" / "config.yaml")
    service = config["service"]
    assert set(service.get("extensions", [])) <= set(config.get("extensions", {}))
    traces = service["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert traces[kind], kind
        assert set(traces[kind]) <= set(config[kind]), kind
    assert "otlp" in traces["receivers"]
    assert {"otlp/jaeger", "file/traces"} <= set(traces["exporters"])
    assert traces["processors"][0] == "memory_limiter"  # first, as the collector advises


def test_the_logs_go_where_kibana_and_grafana_look() -> None:
    """Filebeat writes the data stream that the Kibana data view and Grafana's log source
    read, through the pipeline the docs install as `kfm-logs`."""
    filebeat = load_yaml(ELK / "filebeat.yml")
    index = filebeat["output.elasticsearch"]["index"]
    assert filebeat["output.elasticsearch"]["pipeline"] == "kfm-logs"
    objects = [json.loads(line) for line in (ELK / "kibana-data-view.ndjson").read_text()
               .splitlines() if line.strip()]
    views = [obj for obj in objects if obj["type"] == "index-pattern"]
    assert views and all(fnmatch.fnmatch(index, view["attributes"]["title"]) for view in views)
    logs = next(source for source in load_yaml(GRAFANA / "datasources" / "datasources.yml")
                ["datasources"] if source["type"] == "elasticsearch")
    assert fnmatch.fnmatch(index, logs["jsonData"]["index"])
    ids = {obj["id"] for obj in objects}
    for obj in objects:
        for reference in obj["references"]:
            assert reference["id"] in ids, reference


def test_the_ingest_pipeline_parses_the_line_first() -> None:
    pipeline = json.loads((ELK / "ingest-pipeline.json").read_text())
    first = pipeline["processors"][0]
    assert first["json"]["field"] == "message"
    assert pipeline["on_failure"]
    for processor in pipeline["processors"]:
        (kind,) = processor
        assert kind in {"json", "date", "remove", "rename", "set", "grok"}, kind
