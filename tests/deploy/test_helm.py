"""deploy/helm/ deploys what the services need, and the checks that say so can fail.

Every release (a chart with its values file) passes `helm lint --strict`, renders, and its
manifests pass `kubernetes-validate --strict` for the oldest and newest Kubernetes the charts
target. The render is then read: probes on the health routes, requests and limits, non-root,
no secret value anywhere, HPA and PDB, discovery through DNS, the migrations as a hook Job,
and Kafka as three KRaft pods. Broken values and a manifest with an unknown field are fed to
the same checks, which must refuse them."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import Settings
from devinfra.kafka_dist import DEFAULT_KAFKA_VERSION
from gateway.config import GatewaySettings
from tests.deploy.helm_render import (
    HELM_DIR,
    KUBE_VERSIONS,
    NAMESPACE,
    ROOT,
    VALUES_DIR,
    Manifest,
    Release,
    helm,
    lint,
    one,
    releases,
    rendered,
    run,
    services,
    template,
    validate,
)

RELEASES = {release.name: release for release in releases()}
SERVICE_RELEASES = [RELEASES[name] for name in services()]
APP_RELEASES = [*SERVICE_RELEASES, RELEASES["gateway"]]
SECRET_NAME = re.compile(
    r"PASSWORD|SECRET|PRIVATE|TOKEN$|API_KEY|DATABASE_URL|REDIS_URL|SIGNING_KEY", re.IGNORECASE)
"""Names of settings that hold a secret (the schemas refuse the same under `config`)."""
FAKE_DATABASE_URL = "postgresql+asyncpg://svc@postgres:5432/svc"  # no password: not a secret


def ids(items: list[Release]) -> list[str]:
    return [item.name for item in items]


def pod_spec(manifests: tuple[Manifest, ...], kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, kind)["spec"]["template"]["spec"]
    return spec


def main_container(manifests: tuple[Manifest, ...], kind: str = "Deployment") -> dict[str, Any]:
    container: dict[str, Any] = pod_spec(manifests, kind)["containers"][0]
    return container


def config_map(manifests: tuple[Manifest, ...], name: str) -> dict[str, str]:
    found = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one ConfigMap {name}"
    data: dict[str, str] = found[0]["data"]
    return data


# --- the set of releases ---------------------------------------------------------------------


def test_every_service_has_a_values_file_and_every_values_file_a_release() -> None:
    assert services(), "no services/*/main.py found"
    files = {path.stem for path in VALUES_DIR.glob("*.yaml")}
    assert files == set(RELEASES), (
        f"missing: {sorted(set(RELEASES) - files)}, unused: {sorted(files - set(RELEASES))}")


@pytest.mark.parametrize("release", SERVICE_RELEASES, ids=ids(SERVICE_RELEASES))
def test_a_service_values_file_names_its_service(release: Release) -> None:
    values = yaml.safe_load(release.values.read_text())
    assert values["name"] == release.name
    assert values["existingSecret"], "the service's secrets come from an existing Secret"


def secrets_in(node: Any, where: str = "") -> list[str]:
    """Where a values tree holds a secret: a key named like one (but the keys that NAME a
    Secret), or a URL with a password in it."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in {"existingSecret", "secretMounts", "secretName"} and \
                    SECRET_NAME.search(str(key)):
                found.append(f"{where}{key}")
            found += secrets_in(value, f"{where}{key}.")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += secrets_in(item, f"{where}{i}.")
    elif isinstance(node, str) and re.search(r"://[^/@\s]+:[^/@\s]+@", node):
        found.append(where.rstrip("."))
    return found


@pytest.mark.parametrize("path", sorted(VALUES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_values_files_hold_no_secret(path: Path) -> None:
    assert secrets_in(yaml.safe_load(path.read_text())) == []


def test_the_secret_check_finds_secrets() -> None:
    values = {"existingSecret": "user-secrets", "config": {
        "KAFKA_SASL_PASSWORD": "x", "LEGACY": "postgresql://app:hunter2@db/app"}}
    assert secrets_in(values) == ["config.KAFKA_SASL_PASSWORD", "config.LEGACY"]


# --- lint, render, validate --------------------------------------------------------------------


@pytest.mark.parametrize("release", releases(), ids=ids(releases()))
def test_helm_lint_strict(release: Release) -> None:
    done = lint(release)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_pass_kubernetes_validate(kube_version: str, tmp_path: Path) -> None:
    """Every release rendered for `kube_version`, checked in one kubernetes-validate run (a
    process each would cost a second apiece); its output names the failing file."""
    paths = []
    for release in releases():
        done = template(release, kube_version=kube_version)
        assert done.returncode == 0, f"{release.name}: {done.stderr}"
        paths.append(tmp_path / f"{release.name}.yaml")
        paths[-1].write_text(done.stdout)
    checked = validate(kube_version, *paths)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_renders_without_a_cluster_or_a_kube_version() -> None:
    """`helm template CHART -f VALUES` as typed, with no --kube-version: a Helm built with `go
    install` assumes Kubernetes 1.20 then, so a `kubeVersion` in a Chart.yaml would refuse it."""
    for release in releases():
        done = run(helm(), "template", release.name, *release.args())
        assert done.returncode == 0, f"{release.name}: {done.stderr}"
        assert "kind: Deployment" in done.stdout or "kind: StatefulSet" in done.stdout


# --- the checks themselves ---------------------------------------------------------------------


BROKEN_SERVICE_VALUES = {
    "replicas is not a number": {"replicas": "two"},
    "resources missing": {"resources": None},
    "limits missing": {"resources": {"limits": None}},
    "an unknown key": {"replicass": 3},
    "a secret in config": {"config": {"DATABASE_URL": FAKE_DATABASE_URL}},
    "a password in config": {"config": {"KAFKA_SASL_PASSWORD": "hunter2"}},
    "no existing Secret": {"existingSecret": ""},
    "no name": {"name": ""},
}


@pytest.mark.parametrize("broken", BROKEN_SERVICE_VALUES.values(), ids=BROKEN_SERVICE_VALUES)
def test_a_broken_service_value_fails_lint_and_template(broken: dict[str, Any],
                                                        tmp_path: Path) -> None:
    override = tmp_path / "broken.yaml"
    override.write_text(yaml.safe_dump(broken))
    release = RELEASES["user"]
    assert lint(release).returncode == 0  # the same release, unbroken, passes
    assert lint(release, "-f", str(override)).returncode != 0
    assert template(release, "-f", str(override)).returncode != 0


BROKEN_OTHER_VALUES = {
    "gateway unknown key": ("gateway", {"ingress": {"enabled": True, "hostname": "x"}}),
    "kafka even replicas": ("kafka", {"replicas": 4}),
    "kafka replicas text": ("kafka", {"replicas": "three"}),
    "kafka bad cluster id": ("kafka", {"clusterId": "not-a-cluster-id"}),
    "kafka no storage size": ("kafka", {"persistence": {"size": None}}),
}


@pytest.mark.parametrize("name,broken", BROKEN_OTHER_VALUES.values(), ids=BROKEN_OTHER_VALUES)
def test_a_broken_gateway_or_kafka_value_fails(name: str, broken: dict[str, Any],
                                               tmp_path: Path) -> None:
    override = tmp_path / "broken.yaml"
    override.write_text(yaml.safe_dump(broken))
    release = RELEASES[name]
    failed = template(release, "-f", str(override)).returncode != 0
    assert failed and lint(release, "-f", str(override)).returncode != 0


def test_the_gateway_needs_its_route_table() -> None:
    """Deployed without `--set-file routes=gateway/routes.toml`: refused, not an empty table."""
    bare = Release("gateway", "gateway", VALUES_DIR / "gateway.yaml")
    assert lint(bare).returncode != 0
    done = template(bare)
    assert done.returncode != 0 and "routes" in done.stderr


@pytest.mark.parametrize("change", ["unknown field", "wrong type"])
def test_kubernetes_validate_refuses_a_broken_manifest(change: str, tmp_path: Path) -> None:
    deployment = dict(one(rendered(RELEASES["user"]), "Deployment"))
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    assert validate(KUBE_VERSIONS[0], path).returncode == 0  # as rendered: valid
    broken = yaml.safe_load(path.read_text())
    probe = broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    if change == "unknown field":
        probe["httpGet"]["pathh"] = "/health/live"
    else:
        probe["periodSeconds"] = "often"
    path.write_text(yaml.safe_dump(broken))
    assert validate(KUBE_VERSIONS[0], path).returncode != 0


# --- what the services' and the gateway's render holds ----------------------------------------


@pytest.mark.parametrize("release", APP_RELEASES, ids=ids(APP_RELEASES))
def test_probes_on_the_health_routes(release: Release) -> None:
    container = main_container(rendered(release))
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe, path in [("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready"),
                        ("startupProbe", "/health/live")]:
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe


@pytest.mark.parametrize("release", [*APP_RELEASES, RELEASES["kafka"]], ids=ids(
    [*APP_RELEASES, RELEASES["kafka"]]))
def test_requests_limits_and_non_root(release: Release) -> None:
    """Every pod the release makes (the migration Job's too)."""
    workloads = [m for m in rendered(release)
                 if m["kind"] in {"Deployment", "StatefulSet", "Job"}]
    assert workloads
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            where = f"{workload['kind']} {container['name']}"
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            if release.chart != "kafka":  # Kafka's start script writes its config files
                assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
                mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
                assert "/tmp" in mounts, where
                assert workload["kind"] != "Deployment" or "/data" in mounts, where


@pytest.mark.parametrize("release", releases(), ids=ids(releases()))
def test_no_secret_values_in_the_render(release: Release) -> None:
    manifests = rendered(release)
    assert not [m for m in manifests if m["kind"] == "Secret"]
    for manifest in manifests:
        if manifest["kind"] == "ConfigMap":
            assert not [k for k in manifest["data"] if SECRET_NAME.search(k)], manifest
        for container in manifest.get("spec", {}).get("template", {}).get("spec", {}).get(
                "containers", []):
            named = [env["name"] for env in container.get("env", []) if env.get("value")]
            assert not [name for name in named if SECRET_NAME.search(name)], named


@pytest.mark.parametrize("release", APP_RELEASES, ids=ids(APP_RELEASES))
def test_hpa_and_pdb_cover_the_pods(release: Release) -> None:
    manifests = rendered(release)
    deployment = one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("release", SERVICE_RELEASES, ids=ids(SERVICE_RELEASES))
def test_a_service_is_found_through_kubernetes_dns(release: Release) -> None:
    """The registry's DNS backend resolves <service>.<namespace>.svc.cluster.local to the
    instances: a headless Service of that name over the ready pods, on port 8000."""
    manifests = rendered(release)
    service = one(manifests, "Service")
    assert service["metadata"]["name"] == release.name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["port"] == 8000
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    settings = config_map(manifests, release.name)
    assert settings["REGISTRY_BACKEND"] == "dns"
    assert settings["REGISTRY_DNS_NAMESPACE"] == NAMESPACE
    assert settings["REGISTRY_DNS_PORT"] == "8000"
    assert settings["SERVICE_NAME"] == release.name


@pytest.mark.parametrize("release", SERVICE_RELEASES, ids=ids(SERVICE_RELEASES))
def test_the_settings_load_in_production(release: Release, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """The ConfigMap plus the Secret's DATABASE_URL is a valid production configuration for
    the service's own settings class, and the pods read both."""
    manifests = rendered(release)
    container = main_container(manifests)
    sources = [source.get("configMapRef", source.get("secretRef"))["name"]
               for source in container["envFrom"]]
    values = yaml.safe_load(release.values.read_text())
    assert sources == [release.name, values["existingSecret"]]
    settings = config_map(manifests, release.name)
    assert settings["ENVIRONMENT"] == "production"
    for key, value in {**settings, "DATABASE_URL": FAKE_DATABASE_URL}.items():
        monkeypatch.setenv(key, value)
    loaded = service_settings_class(release.name)(_env_file=None)
    assert (loaded.service_name, loaded.registry_backend) == (release.name, "dns")
    assert loaded.kafka_topic_replication_factor == 3
    issuer = release.name == "auth"  # verifies with its own keys, issues its own tokens
    assert (loaded.jwks_url is None, loaded.auth_token_url is None) == (issuer, issuer)


def service_settings_class(name: str) -> type[Settings]:
    module = importlib.import_module(f"services.{name}.config")
    found = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, Settings) and cls.__module__ == module.__name__]
    assert len(found) == 1, f"services/{name}/config.py: expected one Settings class"
    return found[0]


@pytest.mark.parametrize("release", SERVICE_RELEASES, ids=ids(SERVICE_RELEASES))
def test_migrations_run_as_a_hook_job_before_the_pods(release: Release) -> None:
    manifests = rendered(release)
    job = one(manifests, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "core", "migrate", release.name]
    assert container["image"] == main_container(manifests)["image"] == f"kfm/{release.name}:dev"
    # The hook runs before the chart's ConfigMap exists: it carries the same settings inline.
    inline = {env["name"]: env["value"] for env in container["env"]}
    assert inline == config_map(manifests, release.name)
    assert container["envFrom"] == [{"secretRef": {"name": yaml.safe_load(
        release.values.read_text())["existingSecret"]}}]
    assert (release.chart, job["spec"]["template"]["spec"]["restartPolicy"]) == (
        "service", "Never")


def test_auth_replicas_share_their_signing_keys() -> None:
    """Every auth pod signs with the keys of one Secret: keys made per pod would make tokens
    one replica signed unknown to the JWKS another publishes."""
    container = main_container(rendered(RELEASES["auth"]))
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data/auth-keys"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(rendered(RELEASES["auth"]), "Deployment")[
        "volumes"]}
    assert volumes[mounts["/data/auth-keys"]["name"]]["secret"]["secretName"] == "auth-jwt-keys"


def test_the_gateway_reads_its_routes_from_the_config_map(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    manifests = rendered(RELEASES["gateway"])
    routes = config_map(manifests, "gateway-routes")["routes.toml"]
    assert routes.strip() == (HELM_DIR.parents[1] / "gateway" / "routes.toml").read_text().strip()
    settings = config_map(manifests, "gateway")
    container = main_container(manifests)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "routes")
    assert settings["GATEWAY_ROUTES_FILE"] == f"{mount['mountPath']}/routes.toml"
    assert "subPath" not in mount, "a subPath mount never sees the table change"
    # As in the container: the image's environment, then the ConfigMap, then `env`.
    image_env = {"DATABASE_URL": "sqlite+aiosqlite:////data/gateway.db"}  # the Dockerfile's
    inline = {env["name"]: env["value"] for env in container["env"]}
    for key, value in {**image_env, **settings, **inline}.items():
        monkeypatch.setenv(key, value)
    loaded = GatewaySettings(_env_file=None)
    assert (loaded.environment, loaded.registry_backend) == ("production", "dns")


def test_the_gateway_ingress_is_optional() -> None:
    gateway = RELEASES["gateway"]
    assert not [m for m in rendered(gateway) if m["kind"] == "Ingress"]
    done = template(gateway, "--set", "ingress.enabled=true,ingress.host=api.example.com")
    ingress = [m for m in yaml.safe_load_all(done.stdout) if m and m["kind"] == "Ingress"]
    assert ingress[0]["spec"]["rules"][0]["host"] == "api.example.com"


# --- Kafka ---------------------------------------------------------------------------------------


def test_kafka_is_three_kraft_brokers_without_zookeeper() -> None:
    release = RELEASES["kafka"]
    done = template(release)
    assert "zookeeper" not in done.stdout.lower()
    manifests = rendered(release)
    statefulset = one(manifests, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    headless = next(m for m in manifests if m["kind"] == "Service"
                    and m["spec"].get("clusterIP") == "None")
    assert statefulset["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["publishNotReadyAddresses"] is True
    container = main_container(manifests, "StatefulSet")
    assert container["image"] == f"apache/kafka:{DEFAULT_KAFKA_VERSION}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])
    pod = statefulset["metadata"]["name"]
    host = f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == ",".join(
        f"{i}@{pod}-{i}.{host}:9093" for i in range(3))
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://$(POD_NAME).{host}:9092"
    assert "KAFKA_NODE_ID=\"${HOSTNAME##*-}\"" in container["args"][0]
    assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (
        "3", "2")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "tcpSocket" in container[probe], probe
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {
        claim["metadata"]["name"]: "/var/lib/kafka/data"}
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_kafka_chart_version_matches_the_development_broker() -> None:
    chart = yaml.safe_load((HELM_DIR / "kafka" / "Chart.yaml").read_text())
    assert chart["appVersion"] == DEFAULT_KAFKA_VERSION


def test_the_services_bootstrap_from_the_kafka_chart() -> None:
    client = next(m for m in rendered(RELEASES["kafka"])
                  if m["kind"] == "Service" and m["spec"].get("clusterIP") != "None")
    for release in APP_RELEASES:
        settings = config_map(rendered(release), "gateway" if release.chart == "gateway"
                              else release.name)
        assert settings["KAFKA_BOOTSTRAP_SERVERS"] == f"{client['metadata']['name']}:9092"


# --- deploy.sh -----------------------------------------------------------------------------------


def deploy_script(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(root / "deploy" / "helm" / "deploy.sh"), *args],
                          env={**os.environ, "HELM": helm()}, capture_output=True, text=True,
                          check=False, timeout=120)


def test_deploy_script_renders_every_release(tmp_path: Path) -> None:
    done = deploy_script(ROOT, "--render", str(tmp_path), "-t", "1.2.3", "-n", NAMESPACE)
    assert done.returncode == 0, done.stderr
    assert {path.stem for path in tmp_path.glob("*.yaml")} == set(RELEASES)
    images = {c["image"] for path in tmp_path.glob("*.yaml")
              for doc in yaml.safe_load_all(path.read_text()) if doc
              for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get(
                  "containers", [])}
    assert images == {f"kfm/{name}:1.2.3" for name in [*services(), "gateway"]} | {
        f"apache/kafka:{DEFAULT_KAFKA_VERSION}"}
    done = deploy_script(ROOT, "--render", str(tmp_path), "-t", "2", "-r", "ghcr.io/acme/")
    assert done.returncode == 0, done.stderr
    assert 'image: "ghcr.io/acme/gateway:2"' in (tmp_path / "gateway.yaml").read_text()
    assert 'image: "ghcr.io/acme/user:2"' in (tmp_path / "user.yaml").read_text()


def test_deploy_script_refuses_a_service_without_values(tmp_path: Path) -> None:
    """A new services/<name>/main.py is deployed too (the list is derived): without its values
    file the script stops, naming it."""
    shutil.copytree(HELM_DIR, tmp_path / "deploy" / "helm")
    (tmp_path / "gateway").mkdir()
    shutil.copy(ROOT / "gateway" / "routes.toml", tmp_path / "gateway")
    for name in [*services(), "newsvc"]:
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "main.py").touch()
    done = deploy_script(tmp_path, "--render", str(tmp_path / "out"))
    assert done.returncode != 0
    assert "deploy/helm/values/newsvc.yaml is missing" in done.stderr
    (tmp_path / "deploy" / "helm" / "values" / "newsvc.yaml").write_text(
        (VALUES_DIR / "user.yaml").read_text().replace("user", "newsvc"))
    done = deploy_script(tmp_path, "--render", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "name: newsvc" in (tmp_path / "out" / "newsvc.yaml").read_text()


def test_deploy_script_passes_shellcheck() -> None:
    found = shutil.which("shellcheck")
    assert found, "shellcheck not found: scripts/bootstrap.sh installs it (Debian package)"
    done = subprocess.run([found, str(HELM_DIR / "deploy.sh")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout
