"""A real Prometheus (Debian's, through devinfra.prometheus, on deploy/observability's config)
scrapes a process it finds in the discovery file, labels it with its service, and evaluates
the deploy rules on what it scraped; a target added to the file while it runs is picked up,
and one that does not answer is `down` and raises KfmInstanceDown."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devinfra.process import LOOPBACK, free_port
from devinfra.prometheus import PrometheusServer
from tests.helpers import eventually

EXPOSITION = b"""\
# HELP kfm_service_info The process's version.
# TYPE kfm_service_info gauge
kfm_service_info{version="0.1.0"} 1
# HELP kfm_circuit_breaker_state 0 closed, 1 half-open, 2 open.
# TYPE kfm_circuit_breaker_state gauge
kfm_circuit_breaker_state{upstream="user"} 2
kfm_circuit_breaker_state{upstream="driver"} 0
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(EXPOSITION)))
        self.end_headers()
        self.wfile.write(EXPOSITION)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def metrics_address() -> Iterator[str]:
    """A process serving a fixed /metrics, as a service does."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"{LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def prometheus(metrics_address: str) -> Iterator[PrometheusServer]:
    with PrometheusServer.start(targets={"gateway": [metrics_address]}, interval="1s") as server:
        yield server


def health(prometheus: PrometheusServer) -> dict[str, str]:
    """{service: health} of the kfm job's targets, once each has been scraped."""
    return {target["labels"]["service"]: target["health"]
            for target in prometheus.active_targets()
            if target["labels"].get("job") == "kfm" and target["health"] != "unknown"}


def evaluated_groups(prometheus: PrometheusServer) -> list[dict[str, Any]] | None:
    """The rule groups, once each has been evaluated (a Go zero time until then)."""
    groups: list[dict[str, Any]] = prometheus.api("rules")["groups"]
    never = "0001-01-01T00:00:00Z"
    return groups if groups and all(g["lastEvaluation"] != never for g in groups) else None


def alerts(prometheus: PrometheusServer, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [alert for alert in prometheus.api("alerts")["alerts"]
                                   if alert["labels"]["alertname"] == name]
    return found


async def test_the_discovered_target_is_up_with_its_service_label(
        prometheus: PrometheusServer, metrics_address: str) -> None:
    assert await eventually(lambda: health(prometheus) == {"gateway": "up"}, timeout=30,
                            what="the gateway target scraped")
    (info,) = prometheus.query("kfm_service_info")
    assert info["metric"] == {"__name__": "kfm_service_info", "job": "kfm",
                              "instance": metrics_address, "service": "gateway",
                              "version": "0.1.0"}


async def test_the_deploy_rules_evaluate_on_the_scraped_series(
        prometheus: PrometheusServer) -> None:
    groups = await eventually(lambda: evaluated_groups(prometheus), timeout=30,
                              what="every rule group evaluated")
    assert {group["name"] for group in groups} >= {"kfm-instances", "kfm-http", "kfm-messaging",
                                                   "kfm-outbox-sagas"}
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule
    # The open breaker to user is on its way to firing (pending for its minute); the
    # closed one to driver raises nothing.
    (breaker,) = await eventually(lambda: alerts(prometheus, "KfmCircuitBreakerOpen"),
                                  timeout=30, what="the breaker alert")
    assert breaker["state"] == "pending"
    assert breaker["labels"] == {"alertname": "KfmCircuitBreakerOpen", "service": "gateway",
                                 "upstream": "user", "severity": "warning"}
    assert alerts(prometheus, "KfmInstanceDown") == []


async def test_a_target_added_to_the_file_is_scraped_and_one_down_alerts(
        prometheus: PrometheusServer, metrics_address: str) -> None:
    silent = f"{LOOPBACK}:{free_port()}"  # nothing listens there
    prometheus.set_targets({"gateway": [metrics_address], "user": [silent]})
    assert await eventually(
        lambda: health(prometheus) == {"gateway": "up", "user": "down"}, timeout=60,
        what="the new target seen down")
    (down,) = await eventually(lambda: alerts(prometheus, "KfmInstanceDown"), timeout=30,
                               what="KfmInstanceDown for the silent target")
    assert down["labels"]["service"] == "user" and down["labels"]["instance"] == silent
    assert prometheus.query('up{job="kfm", service="gateway"}')[0]["value"][1] == "1"
