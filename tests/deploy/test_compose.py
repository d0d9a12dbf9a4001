"""docker-compose.yml, checked without an engine: the Compose specification's JSON schema
(check-jsonschema), the Compose loader itself (`docker-compose config`, the v5 plugin built by
devinfra.tools), and what the repository promises of it (tests/deploy/compose_checks.py).
A broken copy of the file must make each check fail. The PostgreSQL init script runs against a
real server."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from core.config import Settings
from devinfra.postgres import PostgresServer
from devinfra.tools import ensure
from tests.deploy.compose_checks import (
    COMPOSE_FILE,
    ROOT,
    TARGETS,
    TEMPLATE_SERVICE,
    compose,
    database_mismatches,
    env_example_names,
    missing_bind_sources,
    missing_gateway_dependencies,
    non_uniform_config,
    non_uniform_text,
    renamed,
    service_names,
    write_env_file,
)

INIT_SCRIPT = ROOT / "deploy" / "compose" / "postgres-init.sh"
CHECK_JSONSCHEMA = ROOT / ".venv" / "bin" / "check-jsonschema"
READ_ELSEWHERE = frozenset({"OTEL_EXPORTER_OTLP_ENDPOINT"})
"""Variables the services' libraries read themselves (the OpenTelemetry SDK's exporter)."""


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    return Path(ensure("docker-compose"))


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_env_file(tmp_path_factory.mktemp("compose") / ".env")


@pytest.fixture(scope="module")
def config(compose_bin: Path, env_file: Path) -> dict[str, Any]:
    """The file as the loader resolves it (anchors merged, variables filled in)."""
    done = compose(compose_bin, COMPOSE_FILE, env_file, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=60, check=False)


def broken_copy(tmp_path: Path, old: str, new: str, *, after: str = "") -> Path:
    """docker-compose.yml with the first `old` after `after` replaced by `new`."""
    text = COMPOSE_FILE.read_text()
    start = text.index(after) if after else 0
    at = text.index(old, start)
    path = tmp_path / "docker-compose.yml"
    path.write_text(text[:at] + new + text[at + len(old):])
    return path


# --- the tools accept the file -----------------------------------------------------------

def test_schema_accepts_the_file() -> None:
    done = schema_check(COMPOSE_FILE)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("profile", [False, True], ids=["default", "observability"])
def test_loader_accepts_the_file(compose_bin: Path, env_file: Path, profile: bool) -> None:
    done = compose(compose_bin, COMPOSE_FILE, env_file, "config", "-q", profile=profile)
    assert done.returncode == 0, done.stderr


def test_observability_profile_holds_the_watchers(compose_bin: Path, env_file: Path) -> None:
    def services(profile: bool) -> set[str]:
        done = compose(compose_bin, COMPOSE_FILE, env_file, "config", "--services",
                       profile=profile)
        assert done.returncode == 0, done.stderr
        return set(done.stdout.split())

    watchers = {"prometheus", "grafana", "otel-collector", "jaeger", "elasticsearch", "kibana",
                "filebeat"}
    assert watchers <= services(True)
    assert not watchers & services(False)


# --- ... and refuse a broken one (the checks can fail) -----------------------------------

@pytest.mark.parametrize(("old", "new", "after"), [
    ("\nservices:\n", "\nservcies:\n", ""),
    ("    healthcheck:", "    helthcheck:", "\n  redis:\n"),
    ("    depends_on:", "    depends:", "\n  gateway:\n"),
], ids=["top-level", "healthcheck", "depends_on"])
def test_unknown_keys_fail_both_checks(compose_bin: Path, env_file: Path, tmp_path: Path,
                                       old: str, new: str, after: str) -> None:
    broken = broken_copy(tmp_path, old, new, after=after)
    key = new.strip().rstrip(":")
    schema = schema_check(broken)
    assert schema.returncode != 0 and key in schema.stdout + schema.stderr, schema.stdout
    loader = compose(compose_bin, broken, env_file, "config", "-q")
    assert loader.returncode != 0 and key in loader.stderr, loader.stderr


def test_loader_refuses_a_missing_password(compose_bin: Path, tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("")
    done = compose(compose_bin, COMPOSE_FILE, empty, "config", "-q")
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr, done.stderr


def test_env_example_lists_what_the_file_needs() -> None:
    """Every ${VAR:?...} the file requires is in .env.example (and given no value there)."""
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    assert required and required <= set(env_example_names())
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "PASSWORD=" in line and not line.startswith("#"):
            assert line.endswith("="), f".env.example must not hold a password: {line}"


# --- what the repository promises of it --------------------------------------------------

def test_every_service_and_the_gateway_have_an_entry(config: dict[str, Any]) -> None:
    names = service_names()
    assert TEMPLATE_SERVICE in names and len(names) >= 5
    for name in [*names, "gateway"]:
        entry = config["services"].get(name)
        assert entry is not None, f"docker-compose.yml has no entry for {name}"
        assert entry["image"] == f"kfm/{name}:dev"
        assert entry["build"]["args"] == {"SERVICE": name}
        assert Path(entry["build"]["context"]) == ROOT
        assert entry["healthcheck"]["test"], name


def test_every_service_entry_is_users_renamed(config: dict[str, Any]) -> None:
    names = service_names()
    assert non_uniform_text(COMPOSE_FILE.read_text(), names) == []
    assert non_uniform_config(config, names) == []


def test_uniformity_check_sees_an_edited_entry(config: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text().replace(
        "      SERVICE_URL: http://driver:8000\n",
        "      SERVICE_URL: http://driver:8000\n      EXTRA: only-here\n")
    assert non_uniform_text(text, service_names()) == ["driver"]
    edited = json.loads(json.dumps(config))
    edited["services"]["order"]["restart"] = "always"
    assert non_uniform_config(edited, service_names()) == ["order"]


def test_gateway_waits_for_every_service(config: dict[str, Any]) -> None:
    assert missing_gateway_dependencies(config, service_names()) == []
    edited = json.loads(json.dumps(config))
    del edited["services"]["gateway"]["depends_on"]["order"]
    edited["services"]["gateway"]["depends_on"]["user"]["condition"] = "service_started"
    assert missing_gateway_dependencies(edited, service_names()) == ["order", "user"]


def test_services_wait_for_healthy_kafka_and_postgres(config: dict[str, Any]) -> None:
    for name in service_names():
        depends = config["services"][name]["depends_on"]
        assert {depends[s]["condition"] for s in ("kafka", "postgres")} == {"service_healthy"}
    for infra in ("kafka", "postgres", "redis"):
        assert config["services"][infra]["healthcheck"]["test"], infra


def test_one_database_per_service(config: dict[str, Any]) -> None:
    assert database_mismatches(config, service_names()) == []
    edited = json.loads(json.dumps(config))
    edited["services"]["postgres"]["environment"]["POSTGRES_DATABASES"] = "auth,user"
    assert "POSTGRES_DATABASES lacks order" in database_mismatches(edited, service_names())


def settings_class(name: str) -> type[Settings]:
    """The settings class service `name` (or the gateway) reads its environment with."""
    module = importlib.import_module("gateway.config" if name == "gateway"
                                     else f"services.{name}.config")
    found = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, Settings) and cls.__module__ == module.__name__]
    assert len(found) == 1, f"{module.__name__}: {found}"
    return found[0]


def unread_variables(name: str, environment: dict[str, str]) -> list[str]:
    """Variables of an entry that its settings class has no field for (a typo: pydantic
    ignores unknown names, so the setting would silently keep its default)."""
    fields = {field.upper() for field in settings_class(name).model_fields}
    return sorted(set(environment) - fields - READ_ELSEWHERE)


def test_every_variable_is_a_setting_and_valid(config: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*service_names(), "gateway"]:
        environment = config["services"][name]["environment"]
        assert unread_variables(name, environment) == [], name
        for variable in list(os.environ):
            monkeypatch.delenv(variable)
        for variable, value in environment.items():
            monkeypatch.setenv(variable, value)
        settings = settings_class(name)(_env_file=None)
        assert settings.service_name == name
        assert settings.advertised_url() == f"http://{name}:8000"
        assert settings.registry_backend == "dns"
        assert settings.database_url.startswith("postgresql+asyncpg://") or name == "gateway"
    assert unread_variables("user", {"JWKS_ULR": "x"}) == ["JWKS_ULR"]


def test_bind_mounted_files_exist(config: dict[str, Any]) -> None:
    binds = [v for s in config["services"].values() for v in s.get("volumes", [])
             if v.get("type") == "bind"]
    assert len(binds) >= 10  # the check below looks at something
    assert missing_bind_sources(config) == []
    edited = json.loads(json.dumps(config))
    edited["services"]["prometheus"]["volumes"][0]["source"] = str(ROOT / "no-such-file.yml")
    assert missing_bind_sources(edited) == [f"prometheus: {ROOT / 'no-such-file.yml'}"]


def test_no_secret_is_written_in_the_file(config: dict[str, Any], env_file: Path) -> None:
    """Every password comes from the (uncommitted) .env: the values the test filled in show up
    in the loaded config only where the file interpolates them."""
    values = {line.split("=", 1)[1] for line in env_file.read_text().splitlines()}
    text = COMPOSE_FILE.read_text()
    assert not any(value in text for value in values)
    assert "POSTGRES_PASSWORD_FILE" in config["services"]["postgres"]["environment"]
    assert set(config["secrets"]) == {"postgres_password", "admin_password",
                                      "grafana_admin_password"}


def test_prometheus_targets_one_file_per_service() -> None:
    """Each service's scrape target is its own file (the generator's template adds one)."""
    names = [*service_names(), "gateway"]
    assert sorted(p.stem for p in TARGETS.glob("*.json")) == sorted(names)
    template = (TARGETS / f"{TEMPLATE_SERVICE}.json").read_text()
    for name in names:
        assert (TARGETS / f"{name}.json").read_text() == renamed(template, name), name
    assert json.loads(template) == [{"targets": [f"{TEMPLATE_SERVICE}:8000"],
                                     "labels": {"service": TEMPLATE_SERVICE}}]


def mounted_tree(config: dict[str, Any], service: str, into: Path) -> Path:
    """The files `service`'s container sees through its bind mounts, as symlinks under
    `into` (the container's / at `into`)."""
    for volume in config["services"][service]["volumes"]:
        if volume["type"] == "bind":
            link = into / volume["target"].lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(volume["source"])
    return into


def test_prometheus_loads_the_mounted_config(config: dict[str, Any], tmp_path: Path) -> None:
    """promtool on /etc/prometheus as the container sees it: the deployment's config, its
    rules and the compose target files (which promtool parses); a bad target file fails."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run scripts/bootstrap.sh"
    root = mounted_tree(config, "prometheus", tmp_path / "good")
    command = [promtool, "check", "config", str(root / "etc/prometheus/prometheus.yml")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "1 rule files found" in done.stdout, done.stdout
    broken = mounted_tree(config, "prometheus", tmp_path / "broken")
    targets = broken / "etc/prometheus/targets"
    targets.unlink()
    shutil.copytree(TARGETS, targets)
    (targets / "bad.json").write_text('[{"targets": ["x:8000"], "label": {}}]')
    command[-1] = str(broken / "etc/prometheus/prometheus.yml")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "unknown field" in done.stdout + done.stderr, done.stdout


def targets(config: dict[str, Any], service: str) -> set[str]:
    return {volume["target"] for volume in config["services"][service].get("volumes", [])}


def test_observability_files_and_containers_line_up(config: dict[str, Any]) -> None:
    """Where deploy/observability's files expect things is where the containers have them."""
    services = config["services"]
    observability = ROOT / "deploy" / "observability"
    provider = yaml.safe_load((observability / "grafana/provisioning/dashboards/dashboards.yml")
                              .read_text())["providers"][0]
    assert provider["options"]["path"] in targets(config, "grafana")
    for source in yaml.safe_load((observability / "grafana/provisioning/datasources/"
                                  "datasources.yml").read_text())["datasources"]:
        assert urlsplit(source["url"]).hostname in services, source["url"]
    collector = yaml.safe_load((observability / "otel-collector/config.yaml").read_text())
    assert str(Path(collector["exporters"]["file/traces"]["path"]).parent) in targets(
        config, "otel-collector")
    assert "/etc/otelcol-contrib/config.yaml" in targets(config, "otel-collector")
    otlp_http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    endpoint = urlsplit(services["user"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == "otel-collector" and otlp_http.endswith(f":{endpoint.port}")
    filebeat = yaml.safe_load((observability / "elk/filebeat.yml").read_text())
    containers = next(i for i in filebeat["filebeat.inputs"] if i["id"] == "kfm-containers")
    assert containers["enabled"] == "${KFM_CONTAINER_LOGS:false}"
    assert services["filebeat"]["environment"]["KFM_CONTAINER_LOGS"] == "true"
    assert all(Path(path).parent.parent.as_posix() in targets(config, "filebeat")
               for path in containers["paths"])


# --- the PostgreSQL init script ----------------------------------------------------------

def test_init_script_is_shellcheck_clean_and_executable() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: run scripts/bootstrap.sh"
    done = subprocess.run([shellcheck, str(INIT_SCRIPT)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout
    assert os.access(INIT_SCRIPT, os.X_OK)  # the image runs it (sources it otherwise)


def run_init(server: PostgresServer, databases: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PGHOST": "127.0.0.1", "PGPORT": str(server.port),
           "POSTGRES_USER": server.user, "POSTGRES_DATABASES": databases}
    return subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_init_script_creates_each_database_once(postgres: PostgresServer) -> None:
    # "grant" is a reserved word, like "user": the script must quote names.
    names = ["compose_init_a", "grant", "compose_init_b"]
    first = run_init(postgres, " compose_init_a,grant , compose_init_b,")
    assert first.returncode == 0, first.stderr
    again = run_init(postgres, ",".join(names))  # an existing volume catching up
    assert again.returncode == 0, again.stderr
    listed = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", postgres.user, "-At",
         "-d", "postgres", "-c", "SELECT datname FROM pg_database"],
        capture_output=True, text=True, check=True).stdout.split()
    assert set(names) <= set(listed)
    for name in names:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U",
                        postgres.user, "-d", "postgres", "-c", f'DROP DATABASE "{name}"'],
                       capture_output=True, check=True)


@pytest.mark.parametrize("databases", ["auth,Bad-Name", "x;DROP DATABASE postgres", ""])
def test_init_script_refuses_bad_names(postgres: PostgresServer, databases: str) -> None:
    done = run_init(postgres, databases)
    assert done.returncode != 0
    assert "not a database name" in done.stderr or "not set" in done.stderr, done.stderr
