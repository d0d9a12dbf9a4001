""".github/workflows/ and the repository's shell scripts pass the checkers CI relies on:
actionlint (which runs shellcheck on every `run:` block), zizmor's offline security audits,
and shellcheck on every tracked `*.sh`. Each checker is also shown to fail on a broken input,
so a checker that silently stopped working would fail here too.

actionlint is built once per machine from the Go module proxy (devinfra/tools.py); shellcheck
is Debian's (scripts/bootstrap.sh); zizmor is a dev dependency. A missing tool fails these
tests, it never skips them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devinfra.tools import ensure

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SHEBANG = re.compile(r"^#!\S*(/|env )(ba|da)?sh\b")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


def shellcheck() -> str:
    found = shutil.which("shellcheck")
    assert found, "shellcheck not found: run scripts/bootstrap.sh (Debian's shellcheck)"
    return found


def zizmor() -> Path:
    found = Path(sys.executable).parent / "zizmor"
    assert found.is_file(), f"{found} missing: zizmor is a dev dependency (uv sync)"
    return found


def run(*argv: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # -shellcheck names the binary so a PATH without it cannot quietly turn the rule off.
    return run(ensure("actionlint"), "-no-color", f"-shellcheck={shellcheck()}", "-pyflakes=",
               *files, cwd=cwd)


def audit(workflows: Path) -> subprocess.CompletedProcess[str]:
    return run(zizmor(), "--offline", "--no-progress", workflows, cwd=workflows.parent.parent)


def workflow_files() -> list[Path]:
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {f.name for f in files} >= {"ci.yml", "mutation.yml", "release.yml"}
    return files


def shell_scripts() -> list[str]:
    """Every tracked or new (not ignored) `*.sh`, and any other such file that starts with a
    shell's `#!` (.ci/run): a script added later is checked too."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard")
    assert listed.returncode == 0, listed.stderr
    scripts = sorted({name for name in listed.stdout.splitlines()
                      if name.endswith(".sh") or SHEBANG.match(_first_line(ROOT / name))})
    assert {"scripts/bootstrap.sh", ".ci/run"} <= set(scripts), scripts
    return scripts


def _first_line(path: Path) -> str:
    try:
        with path.open("rb") as file:
            return file.readline(200).decode(errors="replace")
    except OSError:  # listed but gone (deleted, not yet committed) or not a file
        return ""


def broken_workflow(tmp_path: Path, body: str) -> Path:
    (tmp_path / ".git").mkdir(parents=True)  # actionlint and zizmor look for the repository root
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "broken.yml").write_text(body)
    return workflows


GOOD_HEAD = """\
name: broken
on: pull_request
permissions: {}
jobs:
  check:
    runs-on: ubuntu-24.04
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1
        with:
          persist-credentials: false
"""


def test_actionlint_and_its_shellcheck_pass_on_the_workflows() -> None:
    done = actionlint(*workflow_files())
    assert done.returncode == 0, done.stdout + done.stderr


def test_zizmor_finds_nothing_in_the_workflows() -> None:
    done = audit(WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_passes_on_every_shell_script() -> None:
    done = run(shellcheck(), "--external-sources", *shell_scripts())
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_action_is_pinned_to_a_commit_with_its_version_alongside() -> None:
    """zizmor asks for the SHA; the comment is for the reader (and for Dependabot)."""
    for path in workflow_files():
        for line in path.read_text().splitlines():
            uses = re.search(r"\buses: (.+)$", line)
            if uses:
                assert PINNED.match(uses.group(1)), f"{path.name}: {line.strip()}"


def test_only_the_image_job_may_write_packages() -> None:
    for path in workflow_files():
        workflow = yaml.safe_load(path.read_text())
        assert workflow["permissions"] == {}, f"{path.name}: no token rights by default"
        for name, job in workflow["jobs"].items():
            rights = job["permissions"]
            wanted = {"contents": "read", "packages": "write"} if (
                path.name, name) == ("release.yml", "images") else {"contents": "read"}
            assert rights == wanted, f"{path.name}:{name}: {rights}"


def test_the_release_lists_every_service_found_at_run_time(tmp_path: Path) -> None:
    """The release's service list comes from services/*/main.py, so a generated service ships
    with no edit to the workflow: run that step's script on a tree with a new service."""
    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    (script,) = [s["run"] for s in release["jobs"]["services"]["steps"] if s.get("id") == "list"]
    for name in ("auth", "fresh", "order"):
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "main.py").write_text("")
    (tmp_path / "services" / "not_a_service").mkdir()
    output = tmp_path / "github_output"
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=tmp_path,
                          env={"GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    key, value = output.read_text().strip().split("=", 1)
    assert (key, json.loads(value)) == ("names", ["auth", "fresh", "order", "gateway"])


def test_the_release_deploys_the_images_it_pushed(tmp_path: Path) -> None:
    """The deploy step, run against a stand-in `helm` that records its calls: every release of
    deploy/helm/deploy.sh, each service and the gateway at ghcr.io/<owner>/<repo>/<name> (lower
    case, as GHCR requires) with the tag's images."""
    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    (step,) = [s for s in release["jobs"]["deploy"]["steps"]
               if s.get("name") == "helm upgrade --install"]
    calls = tmp_path / "calls"
    helm = tmp_path / "bin" / "helm"
    helm.parent.mkdir()
    helm.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    helm.chmod(0o755)
    env = {"PATH": f"{helm.parent}:/usr/bin:/bin", "GITHUB_REPOSITORY": "Owner/Repo",
           "GITHUB_REF_NAME": "v1.2.3"}
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    services = sorted(p.parent.name for p in ROOT.glob("services/*/main.py"))
    lines = calls.read_text().splitlines()
    assert [line.split()[2] for line in lines] == [
        "kafka", "auth", *(s for s in services if s != "auth"), "gateway"]
    for line in lines[1:]:
        words = line.split()
        assert words[:2] == ["upgrade", "--install"], line
        assert f"image.repository=ghcr.io/owner/repo/{words[2]}" in words, line
        assert "image.tag=v1.2.3" in words, line


@pytest.mark.parametrize(("step", "complaint"), [
    ('      - run: echo "${{ github.event.pull_request.title }}"\n', "potentially untrusted"),
    ("      - run: echo $HOME/$GITHUB_REF_NAME\n", "SC2086"),  # shellcheck, through actionlint
])
def test_actionlint_fails_on_a_broken_step(tmp_path: Path, step: str, complaint: str) -> None:
    workflows = broken_workflow(tmp_path, GOOD_HEAD + step)
    done = actionlint(workflows / "broken.yml", cwd=tmp_path)
    assert done.returncode == 1 and complaint in done.stdout, done.stdout + done.stderr


def test_actionlint_fails_on_a_misspelt_key(tmp_path: Path) -> None:
    body = GOOD_HEAD.replace("runs-on:", "runs_on:") + "      - run: 'true'\n"
    workflows = broken_workflow(tmp_path, body)
    done = actionlint(workflows / "broken.yml", cwd=tmp_path)
    assert done.returncode == 1 and '"runs_on"' in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize(("step", "audit_name"), [
    ('      - run: echo "${{ github.event.pull_request.title }}"\n', "template-injection"),
    ("      - uses: docker/login-action@v4\n", "unpinned-uses"),
])
def test_zizmor_fails_on_an_unsafe_step(tmp_path: Path, step: str, audit_name: str) -> None:
    workflows = broken_workflow(tmp_path, GOOD_HEAD + step)
    good = audit(broken_workflow(tmp_path / "good", GOOD_HEAD + "      - run: 'true'\n"))
    assert good.returncode == 0, good.stdout + good.stderr
    done = audit(workflows)
    assert done.returncode != 0 and f"[{audit_name}]" in done.stdout, done.stdout + done.stderr


def test_shellcheck_fails_on_an_unquoted_variable(tmp_path: Path) -> None:
    script = tmp_path / "broken.sh"
    script.write_text('#!/usr/bin/env bash\ntarget=$1\nrm -rf $target\n')
    done = run(shellcheck(), script)
    assert done.returncode == 1 and "SC2086" in done.stdout, done.stdout + done.stderr
