"""Issue 24's aims for the bus: consume ≥ 0.8x of typed raw, publish kept ≥ 0.8x, recorded
with `bench.common.aims` so `make bench` ends with them (`python -m bench.aims`)."""

from __future__ import annotations

from pathlib import Path

from bench.bus.contenders import CORE, TYPED
from bench.bus.results import ContenderRun
from bench.common import aims

AIM = 0.8
BENCH = "bus"


def record_aims(runs: dict[str, ContenderRun], file: Path = aims.FILE) -> list[aims.Aim]:
    """One verdict per aim whose two contenders were both measured in this run (medians of
    the interleaved rounds); nothing for an aim `--only` left without its floor."""
    core, typed = runs.get(CORE), runs.get(TYPED)
    if core is None or typed is None:
        return []
    found = []
    for metric, name, aim in (("consume", "consume msg/s vs typed raw", f"≥ {AIM}x"),
                              ("publish", "publish msg/s vs typed raw", f"kept ≥ {AIM}x")):
        ours, floor = core.value(metric), typed.value(metric)
        if ours is None or floor is None or floor <= 0:
            continue
        ratio = ours / floor
        found.append(aims.record(
            BENCH, name, measured=f"{ratio:.2f}x of typed raw ({ours:,.0f} vs {floor:,.0f} msg/s)",
            aim=aim, met=ratio >= AIM, file=file))
    return found
