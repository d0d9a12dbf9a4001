"""Mutation score per module from mutmut's results (`mutants/*.meta`), for `make mutate`.

A mutant counts as killed when a test failed or timed out on it. Mutants listed in
`mutation/equivalent.toml` (behaviour no test could tell apart) leave the score and are
printed separately; an entry whose mutant no longer makes the recorded change (the source
moved and mutmut renumbered) is reported stale and excuses nothing. Exits 1 if any module
kills fewer than THRESHOLD of its mutants, or an equivalent entry is stale.

    python scripts/mutate_report.py [--diffs]   # --diffs: the change each survivor makes
"""

from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "mutation" / "equivalent.toml"
THRESHOLD = 85.0
KILLED = {1, 3, 24, -24, 36, 37, 152, 255}  # test failed, pytest error, timeout, type check
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}


@dataclass
class Module:
    path: str
    killed: int = 0
    equivalent: int = 0
    unchecked: int = 0
    """Mutants this run left out (`make mutate MUTANTS=...` narrows it)."""
    survivors: list[tuple[str, str]] = field(default_factory=list)  # (mutant, status)

    @property
    def total(self) -> int:
        return self.killed + len(self.survivors)

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def changed_lines(mutant: str, path: str) -> str:
    """The mutant's changed lines (`+` side of its diff), as recorded in equivalent.toml."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=path)
    return " / ".join(line[1:].strip() for line in diff.splitlines()
                      if line.startswith("+") and not line.startswith("+++"))


def main(argv: list[str]) -> int:
    console = Console(highlight=False, width=max(Console().width, 160))  # names are long
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    listed = tomllib.loads(EQUIVALENT.read_text()).get("equivalent", [])
    equivalents = {e["mutant"]: e for e in listed}
    modules, excused, stale = [], [], []
    for path in config["only_mutate"]:
        meta = ROOT / "mutants" / f"{path}.meta"
        if not meta.exists():
            console.print(f"[red]no results for {path}: run `make mutate`[/red]")
            return 1
        module = Module(path)
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code is None:
                module.unchecked += 1
                continue
            if code in KILLED:
                module.killed += 1
                continue
            entry = equivalents.get(mutant)
            if entry is not None:
                change = changed_lines(mutant, path)
                if change == entry["change"]:
                    module.equivalent += 1
                    excused.append((mutant, change, entry["why"]))
                    continue
                stale.append((mutant, entry["change"], change))
            module.survivors.append((mutant, STATUS.get(code, f"exit {code}")))
        modules.append(module)

    scores = Table(title="Mutation score (killed / total, equivalents excluded)")
    for column in ("module", "killed", "total", "score", "equivalent", "not run"):
        scores.add_column(column, justify="left" if column == "module" else "right")
    modules = [m for m in modules if m.total or m.equivalent or not m.unchecked]
    for m in modules:
        colour = "green" if m.score >= THRESHOLD else "red"
        scores.add_row(m.path, str(m.killed), str(m.total), f"[{colour}]{m.score:.1f}%[/]",
                       str(m.equivalent), str(m.unchecked))
    console.print(scores)

    survivors = [(m.path, name, status) for m in modules for name, status in m.survivors]
    if survivors:
        table = Table(title="Surviving mutants (`mutmut show NAME` shows one)")
        table.add_column("mutant")
        table.add_column("status")
        if "--diffs" in argv:
            table.add_column("change")
        for path, name, status in survivors:
            row = [name, status] + ([changed_lines(name, path)] if "--diffs" in argv else [])
            table.add_row(*row)
        console.print(table)
    if excused:
        table = Table(title=f"Equivalent mutants ({EQUIVALENT.relative_to(ROOT)})")
        for column in ("mutant", "change", "why"):
            table.add_column(column)
        for row in excused:
            table.add_row(*row)
        console.print(table)
    for name, recorded, now in stale:
        console.print(f"[red]stale equivalent {name}: recorded {recorded!r}, now {now!r}[/red]")

    failing = [m.path for m in modules if m.score < THRESHOLD]
    if failing:
        console.print(f"[red]under {THRESHOLD:.0f}%: {', '.join(failing)}[/red]")
    return 1 if failing or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
