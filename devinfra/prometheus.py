"""A throwaway Prometheus (Debian's `prometheus`) scraping the stack's processes.

It runs the deployment's own configuration (deploy/observability/prometheus/: the scrape
config and the alert rules), copied into its workdir with the intervals a local run wants, so
what `make up OBS=1` shows is what a deployment evaluates. The targets are a file-based
discovery file (`targets/kfm.json`, one entry per process, labelled `service`) that
`set_targets` rewrites while Prometheus runs; it watches the file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from devinfra.files import Workdir
from devinfra.process import LOOPBACK, DevInfraError, ManagedProcess, free_port, wait_until
from devinfra.server import LocalServer

__all__ = ["DEPLOY_DIR", "PrometheusServer", "prometheus_binary", "write_targets"]

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "observability" / "prometheus"
"""The scrape config (prometheus.yml) and its rules/, as a deployment uses them."""

PROMETHEUS_TIMEOUT = 60.0
TARGETS_FILE = "targets/kfm.json"


def prometheus_binary() -> str:
    """$KFM_PROMETHEUS, else prometheus on PATH."""
    found = os.environ.get("KFM_PROMETHEUS") or shutil.which("prometheus")
    if not found:
        raise DevInfraError(
            "prometheus not found (run scripts/bootstrap.sh, or apt-get install prometheus; "
            "or set KFM_PROMETHEUS)"
        )
    return found


def write_targets(path: Path, targets: Mapping[str, Sequence[str]]) -> None:
    """Write a file_sd file: one group per service, its `host:port` addresses, labelled
    `service`. Written aside and renamed, so Prometheus never reads half a file."""
    groups = [{"targets": list(addresses), "labels": {"service": service}}
              for service, addresses in targets.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(json.dumps(groups, indent=2) + "\n")
    scratch.replace(path)


def local_config(config_dir: Path, interval: str) -> dict[str, Any]:
    """`config_dir`/prometheus.yml for a run from another folder: every interval `interval`
    (a deployment's 15 s makes a local run wait), rule files at their absolute paths; the
    discovery files stay relative, in the run's own folder."""
    config: dict[str, Any] = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": interval,
                        "evaluation_interval": interval, "scrape_timeout": interval}
    config["rule_files"] = [str(config_dir / rule) for rule in config.get("rule_files", [])]
    return config


class PrometheusServer(LocalServer):
    """One prometheus process with its config, discovery file and TSDB in `workdir`."""

    def __init__(self, *, port: int, workdir: Workdir) -> None:
        self.port = port
        self._workdir = workdir
        self.startup_seconds: float | None = None
        path = workdir.path
        self._process = ManagedProcess(
            "prometheus",
            [
                prometheus_binary(),
                f"--config.file={path / 'prometheus.yml'}",
                f"--storage.tsdb.path={path / 'data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--storage.tsdb.retention.time=1d",
                "--web.enable-lifecycle",  # POST /-/reload re-reads config and rules
            ],
            cwd=path,
            output=path / "prometheus.log",
        )

    STOP_TIMEOUT = 15.0

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        *,
        targets: Mapping[str, Sequence[str]] | None = None,
        port: int | None = None,
        interval: str = "5s",
        config_dir: Path = DEPLOY_DIR,
        timeout: float = PROMETHEUS_TIMEOUT,
    ) -> PrometheusServer:
        """Start Prometheus on `config_dir`'s configuration scraping `targets` ({service:
        [host:port, ...]}) every `interval`, and block until it is ready."""
        started = time.monotonic()
        server = cls(port=port or free_port(), workdir=Workdir.create(workdir, "prometheus"))
        try:
            config = local_config(config_dir, interval)
            (server.workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
            server.set_targets(targets or {})
            server._process.start()
            wait_until(server._ready, timeout=timeout,
                       what=f"Prometheus on {LOOPBACK}:{server.port}",
                       processes=[server._process], interval=0.2)
        except BaseException:
            server.close()
            raise
        server.startup_seconds = time.monotonic() - started
        return server

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.workdir / TARGETS_FILE

    def set_targets(self, targets: Mapping[str, Sequence[str]]) -> None:
        """Replace the scraped processes ({service: [host:port, ...]}); a running Prometheus
        notices the file change within seconds."""
        write_targets(self.targets_file, targets)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/`path`; its `data`, or DevInfraError with Prometheus's error."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        body = response.json()
        if body.get("status") != "success":
            raise DevInfraError(f"Prometheus {path}: {body.get('errorType')}: "
                                f"{body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {...labels}, "value": [time, "text"]}]."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def active_targets(self) -> list[dict[str, Any]]:
        """The scrape targets as /targets shows them (labels, health, lastError)."""
        targets: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return targets

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def __repr__(self) -> str:
        return f"PrometheusServer({self.url}, {'running' if self.running else 'stopped'})"
