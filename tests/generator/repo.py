"""A throw-away clone of this repository (its last commit: what copier reads too), and the
commands the generator tests run in it, each with this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def clone(tmp: Path) -> Path:
    """This repository's last commit plus the uncommitted changes of its tracked files (a
    template being edited is tested as it is), committed: copier wants a clean repository."""
    repo = tmp / "repo"
    git(ROOT, "clone", "-q", str(ROOT), str(repo))
    changes = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    if changes:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=repo, input=changes,
                       check=True)
        commit(repo, "the uncommitted changes")
    return repo


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                            env={**os.environ, **GIT_ENV}, check=True)
    return result.stdout


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def python(repo: Path, *args: str, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in `repo`: its own code first on the path, not this checkout's."""
    return subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True,
                          timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(repo), **(env or {})})


def core(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return python(repo, "-m", "core", *args)
