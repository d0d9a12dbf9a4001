"""Go-built checkers the deploy tests run (Helm, the Compose loader, actionlint), built once.

None of them is in Debian's packages at a version that knows today's formats, and no release
binary can be downloaded here: each is built from the Go module proxy at a pinned version and
kept in a cache outside the repository (`KFM_TOOLS_DIR`, default `~/.cache/kfm/tools`), so a
second clean clone on the same machine reuses it. Go's own module and build caches make a
rebuild after a version bump cheap. A fresh machine pays about 1.5 min (Helm), 1 min (Compose)
and 20 s (actionlint) on 2 cores; `python -m devinfra.tools ensure` shows a status line while
it builds.

    python -m devinfra.tools ensure [NAME ...]   build what is missing (all by default)
    python -m devinfra.tools path NAME           print the binary's path, building it if needed
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devinfra.files import file_lock


class ToolError(RuntimeError):
    """A tool could not be built: the message carries the failing command's output."""


@dataclass(frozen=True)
class GoTool:
    name: str
    module: str  # the Go module that holds it
    version: str
    package: str  # the main package, relative to the module root
    installable: bool = True  # False: `go install` refuses the module (replace/exclude lines)

    @property
    def binary(self) -> Path:
        return tools_dir() / f"{self.name}-{self.version}" / self.name


TOOLS: dict[str, GoTool] = {
    "helm": GoTool("helm", "helm.sh/helm/v3", "v3.22.1", "cmd/helm"),
    # The Compose v5 CLI plugin; it runs standalone (`docker-compose config -q` needs no
    # engine). Its go.mod has exclude lines, so `go install mod@version` refuses it: the
    # module is downloaded and built from its own directory instead.
    "docker-compose": GoTool("docker-compose", "github.com/docker/compose/v5", "v5.6.0", "cmd",
                             installable=False),
    "actionlint": GoTool("actionlint", "github.com/rhysd/actionlint", "v1.7.12",
                         "cmd/actionlint"),
}


def tools_dir() -> Path:
    configured = os.environ.get("KFM_TOOLS_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kfm" / "tools"


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists()
                                else None)
    if go is None:
        raise ToolError("`go` is not on PATH: the deploy checkers are built with Go")
    return go


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ToolError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                        f"{done.stdout[-4000:]}{done.stderr[-4000:]}")
    return done.stdout


def _build(tool: GoTool, into: Path) -> None:
    go = _go()
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    if tool.installable:
        _run([go, "install", f"{tool.module}/{tool.package}@{tool.version}"],
             env={**env, "GOBIN": str(into)})
        return
    info = json.loads(_run([go, "mod", "download", "-json", f"{tool.module}@{tool.version}"],
                           env=env))
    # The module cache is read-only and go.sum may be incomplete there: build from a copy.
    with tempfile.TemporaryDirectory(prefix=f"kfm-{tool.name}-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(info["Dir"], src)
        for path in src.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        _run([go, "build", "-trimpath", "-o", str(into / tool.name), f"./{tool.package}"],
             cwd=src, env=env)


def ensure(name: str, *, quiet: bool = False) -> Path:
    """The path of tool `name`, built first if this machine has not built it yet."""
    try:
        tool = TOOLS[name]
    except KeyError:
        raise ToolError(f"unknown tool {name!r}; known: {', '.join(TOOLS)}") from None
    if tool.binary.exists():
        return tool.binary
    with file_lock(tools_dir() / f".{name}.lock"):
        if tool.binary.exists():  # built by another process while this one waited
            return tool.binary
        if not quiet:
            print(f"devinfra.tools: building {name} {tool.version} from the Go module proxy "
                  "(once per machine)...", file=sys.stderr, flush=True)
        started = time.monotonic()
        staging = tool.binary.parent.with_name(tool.binary.parent.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            _build(tool, staging)
            staging.rename(tool.binary.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not quiet:
            print(f"devinfra.tools: {name} built in {time.monotonic() - started:.0f} s: "
                  f"{tool.binary}", file=sys.stderr, flush=True)
    return tool.binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devinfra.tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = sub.add_parser("ensure", help="build the tools this machine lacks")
    ensure_cmd.add_argument("names", nargs="*", metavar="NAME", help=", ".join(TOOLS))
    ensure_cmd.add_argument("-q", "--quiet", action="store_true")
    path_cmd = sub.add_parser("path", help="print a tool's path (built if missing)")
    path_cmd.add_argument("name", choices=list(TOOLS))
    args = parser.parse_args(argv)
    try:
        if args.command == "path":
            print(ensure(args.name, quiet=True))
        else:
            for name in args.names or TOOLS:
                ensure(name, quiet=args.quiet)
    except ToolError as exc:
        print(f"devinfra.tools: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
