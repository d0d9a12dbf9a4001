"""A process's resident memory from /proc: RSS, and PSS and USS from `smaps_rollup` (one read
of a summary the kernel keeps, cheap enough to sample every few seconds).

- RSS: every page of the process in RAM, shared ones (the interpreter, libraries) counted
  whole in each process that maps them;
- PSS: shared pages divided among the processes that share them (they sum to the machine's
  total);
- USS: the pages only this process has (private clean + dirty): what stopping it frees.

A process is measured with its descendants (a server's worker processes), summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Memory:
    """KiB, summed over a process and its descendants."""

    rss: int
    pss: int
    uss: int
    processes: int

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss + other.rss, self.pss + other.pss, self.uss + other.uss,
                      self.processes + other.processes)


NONE = Memory(0, 0, 0, 0)


def _rollup(pid: int) -> Memory:
    """One process's numbers; zero when it is gone (it may exit while we look)."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return NONE
    fields: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0])
    return Memory(rss=fields.get("Rss", 0), pss=fields.get("Pss", 0),
                  uss=fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
                  processes=1)


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def memory(root: int) -> Memory:
    total = NONE
    for pid in descendants(root):
        total = total + _rollup(pid)
    return total


def open_sockets(root: int) -> int:
    """Sockets the process (and descendants) hold open: the connections it keeps."""
    count = 0
    for pid in descendants(root):
        try:
            links = list((PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for link in links:
            try:
                if link.readlink().name.startswith("socket:"):
                    count += 1
            except OSError:
                continue
    return count


def slope_per_minute(times: list[float], values: list[float]) -> float:
    """Least-squares slope of `values` against `times` (seconds), per minute."""
    n = len(times)
    if n < 2:
        raise ValueError("need two samples for a slope")
    mean_t, mean_v = sum(times) / n, sum(values) / n
    var = sum((t - mean_t) ** 2 for t in times)
    if var == 0:
        raise ValueError("samples at one instant")
    cov = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True))
    return 60.0 * cov / var
