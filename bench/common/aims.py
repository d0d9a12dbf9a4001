"""Issue 24's aims, recorded by each benchmark as it measures them, so `make bench` can end
with one table of every aim met or missed in that run (`python -m bench.aims`).

A benchmark calls `record()` once per aim with what it measured and the floor it measured
in the same run; the verdicts accumulate in `reports/bench/aims.jsonl` (`make bench` clears
it first), one JSON object per line, so benchmarks in separate processes add to one table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common.paths import ROOT

FILE = ROOT / "reports" / "bench" / "aims.jsonl"


@dataclass(frozen=True, slots=True)
class Aim:
    """One aim: `measured` and `aim` as a reader would write them ("0.83x of typed raw",
    "≥ 0.8x"), `met` the verdict the benchmark computed from its numbers."""

    bench: str
    name: str
    measured: str
    aim: str
    met: bool
    at: float = 0.0

    @property
    def verdict(self) -> str:
        return "PASS" if self.met else "MISS"


def record(bench: str, name: str, *, measured: str, aim: str, met: bool,
           file: Path = FILE) -> Aim:
    """Append one verdict (and return it, for the benchmark's own table)."""
    entry = Aim(bench, name, measured, aim, met, time.time())
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("a", encoding="utf-8") as out:
        out.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
    return entry


def recorded(file: Path = FILE) -> list[Aim]:
    """Every verdict recorded since the file was last cleared; the latest per (bench, name)."""
    if not file.exists():
        return []
    latest: dict[tuple[str, str], Aim] = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            aim = Aim(**json.loads(line))
            latest[(aim.bench, aim.name)] = aim
    return list(latest.values())


def clear(file: Path = FILE) -> None:
    file.unlink(missing_ok=True)
