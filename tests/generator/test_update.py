"""`update-service` in a clone: a template change reaches a generated service by a three-way
merge that keeps the service's own edits; an edit of the same lines is refused as a conflict,
naming the file (copier itself would exit 0 and leave the markers)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from core.commands.create_service import GeneratorError, create, update
from core.commands.wiring import WiringError
from tests.generator.repo import clone, commit, git

TEMPLATE = Path("template/services/{{ name }}")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_update_merges_the_template_into_a_locally_edited_service(tmp_path: Path) -> None:
    repo = clone(tmp_path)
    create(repo, "shop")  # in-process: the command itself is run by test_generate.py
    commit(repo, "create-service shop")
    assert update(repo, "shop") == []  # the template has not changed: nothing touched
    service = repo / "services/shop"
    with (service / "rules.py").open("a") as local:  # the service's own code
        local.write("\n\nMAX_ITEMS = 500\n")
    commit(repo, "shop: a local edit")
    edit(repo / TEMPLATE / "config.py.jinja", "    service_port: int",
         "    page_size: int = Field(default=20, ge=1, le=100)\n    service_port: int")
    edit(repo / TEMPLATE / "rules.py.jinja", '"""Item rules:', '"""The item rules:')
    commit(repo, "template: a new setting")

    started = time.monotonic()
    changed = update(repo, "shop")
    print(f"update-service: {time.monotonic() - started:.1f}s")
    assert {"services/shop/config.py", "services/shop/rules.py"} <= set(changed)
    assert "page_size: int = Field(default=20" in (service / "config.py").read_text()
    rules = (service / "rules.py").read_text()
    assert rules.startswith('"""The item rules:') and "MAX_ITEMS = 500" in rules
    answers = (repo / "services/.copier-answers.shop.yml").read_text()
    assert "name: shop" in answers and "port: 8006" in answers
    commit(repo, "update-service shop")

    edit(service / "config.py", "ge=1, le=100", "ge=5, le=100")  # both edit one line
    commit(repo, "shop: its own page size bounds")
    edit(repo / TEMPLATE / "config.py.jinja", "ge=1, le=100", "ge=1, le=500")
    commit(repo, "template: larger pages")
    with pytest.raises(GeneratorError, match=r"conflict(.|\n)*services/shop/config\.py"):
        update(repo, "shop")
    assert "<<<<<<<" in (service / "config.py").read_text()  # left for the developer


def test_a_quoted_commit_in_the_answers_is_read_without_its_quotes(tmp_path: Path) -> None:
    """copier writes `_commit: '7701518'`, quoted, when the short hash is digits only (YAML
    would read a number): the unchanged template must still be seen as unchanged, not merged
    again (this failed once a commit's short hash happened to be all digits)."""
    repo = clone(tmp_path)
    create(repo, "shop")
    commit(repo, "create-service shop")
    answers = repo / "services/.copier-answers.shop.yml"
    head = git(repo, "rev-parse", "HEAD").strip()
    answers.write_text(re.sub(r"^_commit: .*$", f"_commit: '{head}'", answers.read_text(),
                              flags=re.MULTILINE))
    commit(repo, "answers: the commit quoted, as copier quotes a hash of digits")
    assert update(repo, "shop") == []


def test_a_wiring_failure_after_rendering_leaves_the_tree_as_it_was(tmp_path: Path) -> None:
    """The template rendered and two files wired, then Compose's shape refused: nothing of
    the new service stays behind (no service half-written, half-wired)."""
    repo = clone(tmp_path)
    edit(repo / "docker-compose.yml", "\n  user:\n", "\n  users:\n")  # no entry to copy
    commit(repo, "compose without a user entry")
    with pytest.raises(WiringError, match=r"no services\.user entry"):
        create(repo, "cart")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (repo / "services/cart").exists()
