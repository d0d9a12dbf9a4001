"""What `create-service` and `update-service` refuse, each with a clear message and exit 1:
bad names, a service or route that exists, a dirty working tree, no git repository, a taken
port, a service without answers file. No template is rendered: each check comes first."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.commands import wiring
from core.commands.cli import app
from core.commands.create_service import GeneratorError, check_name, create, update
from tests.generator.repo import ROOT, commit, git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding what the checks read: the lists of services, one service."""
    for path in (wiring.STACK_MANIFEST, wiring.ROUTES):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    (tmp_path / "services/user").mkdir(parents=True)
    (tmp_path / "services/user/main.py").write_text("")
    git(tmp_path, "init", "-q")
    commit(tmp_path, "start")
    return tmp_path


@pytest.mark.parametrize(("name", "why"), [
    ("Shop", "lower-case letters"), ("shop-api", "lower-case letters"),
    ("shop_api", "lower-case letters"), ("2shop", "a letter first"), ("s", "2 to 30"),
    ("a" * 31, "2 to 30"), ("", "lower-case letters"), ("class", "Python keyword"),
    ("match", "Python keyword"), ("gateway", "reserved"), ("core", "reserved"),
    ("tests", "reserved"), ("legacy", "reserved"), ("kafka", "reserved"),
])
def test_a_bad_name_is_refused(name: str, why: str) -> None:
    with pytest.raises(GeneratorError, match=why):
        check_name(name)


@pytest.mark.parametrize("name", ["shop", "billing2", "ab"])
def test_a_good_name_passes(name: str) -> None:
    check_name(name)


def test_an_existing_service_is_refused(repo: Path) -> None:
    with pytest.raises(GeneratorError, match="services/user exists already"):
        create(repo, "user")


def test_a_name_whose_route_prefix_is_taken_is_refused(repo: Path) -> None:
    with pytest.raises(GeneratorError, match="/api/users"):
        create(repo, "users")  # /api/users is the user service's


@pytest.mark.parametrize("name", ["kibana", "elasticsearch", "filebeat", "jaeger2"])
def test_a_name_compose_uses_already_is_refused_before_anything_is_written(
        repo: Path, name: str) -> None:
    """A Compose service (or volume) of that name would leave the new service without its
    entry, after its files and routes were written."""
    compose = (ROOT / wiring.COMPOSE).read_text()
    (repo / wiring.COMPOSE).write_text(compose + "  jaeger2:\n    driver: local\n")
    commit(repo, "compose")
    with pytest.raises(GeneratorError, match=f"{name!r} is a service or volume"):
        create(repo, name)
    assert not (repo / "services" / name).exists()
    assert git(repo, "status", "--porcelain") == ""


def test_a_dirty_working_tree_is_refused_naming_the_changes(repo: Path) -> None:
    (repo / "notes.txt").write_text("uncommitted")
    with pytest.raises(GeneratorError, match=r"uncommitted changes(.|\n)*notes\.txt"):
        create(repo, "shop")
    with pytest.raises(GeneratorError, match="uncommitted changes"):
        (repo / "services/.copier-answers.shop.yml").write_text("name: shop\n")
        update(repo, "shop")


def test_outside_a_git_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="not a git repository"):
        create(tmp_path, "shop")


def test_a_taken_port_is_refused(repo: Path) -> None:
    with pytest.raises(GeneratorError, match="port 8002 is user's"):
        create(repo, "shop", 8002)


def test_update_of_a_service_not_generated_is_refused(repo: Path) -> None:
    with pytest.raises(GeneratorError, match=r"copier-answers\.user\.yml not found"):
        update(repo, "user")


def test_the_commands_exit_1_with_the_message(repo: Path) -> None:
    runner = CliRunner()
    for args in (["create-service", "Bad-Name"], ["create-service", "user"],
                 ["update-service", "user"]):
        result = runner.invoke(app, [*args, "--root", str(repo)])
        assert result.exit_code == 1, (args, result.output)
        assert "error:" in result.output
    assert git(repo, "status", "--porcelain") == ""  # nothing written
    assert subprocess.run(["git", "-C", str(repo), "log", "--oneline"], capture_output=True,
                          text=True, check=True).stdout.count("\n") == 1
