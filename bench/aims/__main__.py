"""Prints every aim the benchmarks of this run recorded, PASS or MISS; `--clear` forgets
them (`make bench` clears before its first benchmark). Exit status 0 either way: a missed
aim is a finding to read, not a broken build."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from bench.common.aims import FILE, clear, recorded


def main(argv: list[str]) -> int:
    if "--clear" in argv:
        clear()
        return 0
    aims = recorded()
    console = Console()
    if not aims:
        console.print(f"no aims recorded in {FILE} (run `make bench`)")
        return 0
    table = Table(title="Issue 24's aims, this run")
    for column in ("benchmark", "aim", "measured", "target", "verdict"):
        table.add_column(column)
    for aim in aims:
        colour = "green" if aim.met else "red"
        table.add_row(aim.bench, aim.name, aim.measured, aim.aim,
                      f"[{colour}]{aim.verdict}")
    console.print(table)
    met = sum(aim.met for aim in aims)
    console.print(f"{met} of {len(aims)} aims met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
