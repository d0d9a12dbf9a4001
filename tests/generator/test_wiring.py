"""The generator's edits of the files that list services, on copies of the real ones (and a
small Compose file of the agreed shape): the new service is there, nothing else changed,
comments survive, and a second run changes nothing."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

from core.commands import wiring
from devinfra.stack.specs import StackError, load_services, start_order
from gateway.config import GatewaySettings
from gateway.routes.file import load_route_table
from tests.generator.repo import ROOT

COMPOSE = """\
name: kfm
x-service: &service
  restart: unless-stopped
  healthcheck:
    test: ["CMD", "python", "-c",
           "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready')"]
services:
  postgres:
    image: postgres:16
    environment:
      POSTGRES_DATABASES: auth,user
  user:  # every service's entry is this one with its name
    <<: *service
    build: {context: ., args: {SERVICE: user}}
    image: kfm/user:dev
    environment:
      SERVICE_NAME: user
      DATABASE_URL: postgresql+asyncpg://postgres@postgres/user
    volumes:
      - user-data:/data
    depends_on:
      postgres: {condition: service_healthy}

  # The one door: last.
  gateway:
    image: kfm/gateway:dev
    depends_on:
      user:
        condition: service_healthy
      auth-admin:
        condition: service_completed_successfully
volumes:
  user-data: {}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for path in (wiring.STACK_MANIFEST, wiring.ROUTES):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    return tmp_path


def test_the_stack_runs_the_new_service_after_auth_and_before_the_gateway(root: Path) -> None:
    before = (root / wiring.STACK_MANIFEST).read_text()
    assert wiring.next_port(root) == 8006
    assert wiring.wire_stack(root, "shop", 8006)
    specs = {s.name: s for s in load_services(root / wiring.STACK_MANIFEST)}
    assert specs["shop"].module == "services.shop" and specs["shop"].port == 8006
    assert specs["shop"].after == ("auth",) and "shop" in specs["gateway"].after
    waves = [[s.name for s in wave] for wave in start_order(list(specs.values()))]
    assert waves[-1] == ["gateway"] and "shop" in waves[1]
    text = (root / wiring.STACK_MANIFEST).read_text()
    assert "# The one door clients use" in text and text.index('"shop"') < text.index('"gateway"')
    assert wiring.next_port(root) == 8007
    assert not wiring.wire_stack(root, "shop", 8006)  # once
    assert (root / wiring.STACK_MANIFEST).read_text() == text
    assert text.count("[[services]]") == before.count("[[services]]") + 1


def test_the_gateway_routes_the_new_prefix_with_a_token(root: Path) -> None:
    before = (root / wiring.ROUTES).read_text()
    assert wiring.route_taken(root, "shop") is None
    assert wiring.route_taken(root, "users") is not None  # the user service's prefix
    assert wiring.wire_routes(root, "shop")
    text = (root / wiring.ROUTES).read_text()
    assert text.startswith(before.rstrip("\n"))  # appended: every comment as it was
    table = load_route_table(root / wiring.ROUTES, GatewaySettings())
    [route] = [r for r in table.routes if r.name == "shop"]
    assert (route.prefix, route.service, route.rewrite, route.public) == (
        "/api/shop", "shop", "/shop", False)
    assert not wiring.wire_routes(root, "shop")
    assert (root / wiring.ROUTES).read_text() == text


def test_compose_gets_a_copy_of_users_entry_its_database_and_the_gateways_wait(
        tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    assert wiring.wire_compose(tmp_path, "shop")
    text = (tmp_path / "docker-compose.yml").read_text()
    doc = yaml.safe_load(text)
    services = doc["services"]
    assert list(services) == ["postgres", "user", "shop", "gateway"]
    renamed = yaml.safe_load(COMPOSE.replace("user", "shop"))["services"]["shop"]
    assert services["shop"] == renamed and services["shop"]["restart"] == "unless-stopped"
    assert services["user"] == yaml.safe_load(COMPOSE)["services"]["user"]  # untouched
    assert list(services["gateway"]["depends_on"]) == ["user", "shop", "auth-admin"]
    assert services["gateway"]["depends_on"]["shop"] == {"condition": "service_healthy"}
    assert services["postgres"]["environment"]["POSTGRES_DATABASES"] == "auth,user,shop"
    assert "shop-data" in doc["volumes"]
    # Only additions, and the one database line: anchors, wrapped lists, comments all stay.
    changes = [(op, COMPOSE.splitlines()[i1:i2]) for op, i1, i2, _, _ in difflib.SequenceMatcher(
        a=COMPOSE.splitlines(), b=text.splitlines(), autojunk=False).get_opcodes()
        if op != "equal"]
    assert [op for op, _ in changes if op != "insert"] == ["replace"]
    assert [old for op, old in changes if op == "replace"] == [
        ["      POSTGRES_DATABASES: auth,user"]]
    assert "    <<: *service\n    build: {context: ., args: {SERVICE: shop}}" in text
    assert text.index("  shop:") < text.index("  # The one door: last.")
    assert not wiring.wire_compose(tmp_path, "shop")
    assert (tmp_path / "docker-compose.yml").read_text() == text


def test_compose_is_skipped_without_a_file_and_refused_without_users_entry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert not wiring.wire_compose(tmp_path, "shop")
    assert "no docker-compose.yml" in capsys.readouterr().out
    (tmp_path / "docker-compose.yml").write_text("services:\n  gateway: {image: g}\n")
    with pytest.raises(wiring.WiringError, match=r"services\.user"):
        wiring.wire_compose(tmp_path, "shop")


def test_a_postgres_without_its_database_list_is_refused(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(
        COMPOSE.replace("POSTGRES_DATABASES: auth,user", "POSTGRES_DB: platform"))
    with pytest.raises(wiring.WiringError, match="POSTGRES_DATABASES"):
        wiring.wire_compose(tmp_path, "shop")


def test_a_wrong_manifest_row_names_itself(tmp_path: Path) -> None:
    manifest = tmp_path / "services.toml"
    manifest.write_text('[[services]]\nname = "auth"\nport = 8001\n\n'
                        '[[services]]\nname = "shop"\ncolour = "red"\n')
    with pytest.raises(StackError, match=r"row 2 \('shop'\)"):
        load_services(manifest)


def test_the_repositorys_own_compose_file_takes_a_new_service(tmp_path: Path) -> None:
    """On the real docker-compose.yml once it exists (the fixture's shape until then)."""
    real = ROOT / wiring.COMPOSE
    before = real.read_text() if real.exists() else COMPOSE
    (tmp_path / wiring.COMPOSE).write_text(before)
    assert wiring.wire_compose(tmp_path, "shop")
    old, new = yaml.safe_load(before)["services"], yaml.safe_load(
        (tmp_path / wiring.COMPOSE).read_text())["services"]
    assert set(new) - set(old) == {"shop"} and list(new).index("shop") < list(new).index("gateway")
    assert {k: v for k, v in new.items() if k not in ("shop", "gateway", "postgres")} == {
        k: v for k, v in old.items() if k not in ("gateway", "postgres")}
    assert "shop" in new["gateway"]["depends_on"]
    assert "shop" in str(new["postgres"]["environment"])
